# Stage 3, encode: one job per shard, images and captions to Parquet feature shards.
# A shard is large (shards.size), so a job's ~5 s start-up is a small share of it.


rule encode_image_shard:
    input:
        shard_list=shard_list,
        card=card_for_tag,
        settings=settings_file("encode_images"),
    output:
        "results/features/{model}/{col}/{shard}.parquet",
    log:
        "results/logs/encode/{model}/{col}/{shard}.log",
    benchmark:
        "results/benchmarks/encode/{model}/{col}/{shard}.tsv"
    conda:
        "../envs/tuwen.yaml"
    threads: HEAVY_JOB_THREADS
    resources:
        gpu=config["gpus_per_job"],
        mem_mb=8000,
        runtime=shard_runtime("image", 0.1),
    script:
        "../scripts/encode_shard.py"


rule encode_text_shard:
    input:
        shard_list=shard_list,
        card=card_for_tag,
    output:
        "results/features/{model}/{tset}/{shard}.parquet",
    log:
        "results/logs/encode/{model}/{tset}/{shard}.log",
    benchmark:
        "results/benchmarks/encode/{model}/{tset}/{shard}.tsv"
    conda:
        "../envs/tuwen.yaml"
    threads: HEAVY_JOB_THREADS
    resources:
        gpu=config["gpus_per_job"],
        mem_mb=4000,
        runtime=shard_runtime("text", 0.01),
    script:
        "../scripts/encode_shard.py"
