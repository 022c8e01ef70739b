# Stage 1, ingest: image folders and CSVs to validated manifests and rejects reports.


wildcard_constraints:
    col="|".join(IMAGE_COLLECTIONS),
    tset="|".join(TEXT_COLLECTIONS),
    name="|".join([*IMAGE_COLLECTIONS, *TEXT_COLLECTIONS]),
    task="|".join(TASKS),
    shard=r"s\d+",
    stage="|".join(STAGES),


rule ingest_images:
    input:
        folder=image_folder,
        settings=settings_file("ingest"),
    output:
        manifest="results/manifest/{col}/images.parquet",
        rejects="results/manifest/{col}/rejects.csv",
    log:
        "results/logs/ingest_images/{col}.log",
    benchmark:
        "results/benchmarks/ingest_images/{col}.tsv"
    wildcard_constraints:
        col="|".join(IMAGE_FOLDERS),
    conda:
        "../envs/tuwen.yaml"
    threads: INGEST_THREADS
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        always_verify_decode=always_verify_decode,
        # Outside the outputs, which Snakemake deletes before the job: unchanged files
        # (name, size, mtime) keep their validated rows instead of being decoded again.
        scan_cache="results/cache/ingest/{col}.parquet",
    script:
        "../scripts/ingest_images.py"


rule ingest_texts:
    input:
        unpack(text_set_inputs),
    output:
        manifest="results/manifest/{tset}/texts.parquet",
        rejects="results/manifest/{tset}/rejects.csv",
    log:
        "results/logs/ingest_texts/{tset}.log",
    wildcard_constraints:
        tset="|".join(TEXT_SETS),
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        id_column=text_id_column,
    script:
        "../scripts/ingest_texts.py"


rule ingest_image_queries:
    input:
        csv=data_path(IMAGE_QUERY_LIST),
        images="results/manifest/i2t_images/images.parquet",
    output:
        manifest="results/manifest/i2t_queries/queries.parquet",
        rejects="results/manifest/i2t_queries/rejects.csv",
    log:
        "results/logs/ingest_image_queries.log",
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/ingest_image_queries.py"
