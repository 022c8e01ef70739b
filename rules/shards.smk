# Stage 2, shard: the append-only shard registry of each collection. A checkpoint,
# because the shards to encode are known only once the manifest is.


checkpoint assign_shards:
    input:
        manifest=manifest_of,
    output:
        assignment="results/shards/{name}/assignment.parquet",
    log:
        "results/logs/assign_shards/{name}.log",
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        registry="results/shards/{name}",
        shard_size_key=shard_size_key,
    script:
        "../scripts/assign_shards.py"
