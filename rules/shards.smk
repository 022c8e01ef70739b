# Stage 2, shard: the append-only shard registry of each collection. A checkpoint,
# because the shards to encode are known only once the manifest is.


checkpoint assign_shards:
    input:
        manifest=manifest_of,
    output:
        assignment=layout.assignment("{name}"),
    log:
        layout.log("assign_shards", "{name}"),
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        registry=layout.registry("{name}"),
        kind=collection_kind,
        shard_size_key=shard_size_key,
    script:
        "../scripts/assign_shards.py"
