# Duplicates: per image collection, exact and near copies by a perceptual hash. Each shard is
# hashed once and paired with itself and the shards before it, so a new shard is compared
# with the others and no pair is searched again; the groups are made from all pairs.


rule duplicate_shard:
    input:
        shard_list=shard_list,
        earlier=earlier_duplicate_hashes,
        settings=settings_file("duplicates"),
    output:
        hashes=layout.duplicate_hashes("{col}", "{shard}"),
        pairs=layout.duplicate_pairs("{col}", "{shard}"),
    log:
        layout.log("duplicate_shard", "{col}", "{shard}"),
    wildcard_constraints:
        col="|".join(plans.duplicates_collections(RUN)) or "(?!)",
    conda:
        "../envs/tuwen.yaml"
    resources:
        mem_mb=2000,
        runtime=shard_runtime(IMAGES, 0.02),
    script:
        "../scripts/duplicate_shard.py"


rule find_duplicates:
    input:
        unpack(duplicates_inputs),
    output:
        layout.duplicates("{col}"),
    log:
        layout.log("find_duplicates", "{col}"),
    wildcard_constraints:
        col="|".join(plans.duplicates_collections(RUN)) or "(?!)",
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/find_duplicates.py"
