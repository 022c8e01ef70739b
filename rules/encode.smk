# Stage 3, encode: one job per shard, images or captions to Parquet feature shards.
# A shard is large (shards.size), so a job's ~5 s start-up is a small share of it.


rule encode_image_shard:
    input:
        shard_list=shard_list,
        card=card_for_tag,
        towers=towers_for_tag,
        settings=settings_file("encode_images"),
    output:
        layout.features("{tag}", "{col}", "{shard}"),
    log:
        layout.log("encode", "{tag}", "{col}", "{shard}"),
    benchmark:
        layout.benchmark("encode", "{tag}", "{col}", "{shard}")
    conda:
        "../envs/tuwen.yaml"
    threads: HEAVY_JOB_THREADS
    resources:
        gpu=config["gpus_per_job"],
        mem_mb=8000,
        runtime=shard_runtime(IMAGES, 0.1),
    params:
        kind=IMAGES,
    script:
        "../scripts/encode_shard.py"


rule encode_text_shard:
    input:
        shard_list=shard_list,
        card=card_for_tag,
        towers=towers_for_tag,
    output:
        layout.features("{tag}", "{tset}", "{shard}"),
    log:
        layout.log("encode", "{tag}", "{tset}", "{shard}"),
    benchmark:
        layout.benchmark("encode", "{tag}", "{tset}", "{shard}")
    conda:
        "../envs/tuwen.yaml"
    threads: HEAVY_JOB_THREADS
    resources:
        gpu=config["gpus_per_job"],
        mem_mb=4000,
        runtime=shard_runtime(TEXTS, 0.01),
    params:
        kind=TEXTS,
    script:
        "../scripts/encode_shard.py"
