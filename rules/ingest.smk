# Stage 1, ingest: image folders and caption tables to validated manifests and rejects reports.


wildcard_constraints:
    col="|".join(RUN.of_kind(IMAGES)) or "(?!)",
    tset="|".join(RUN.of_kind(TEXTS)) or "(?!)",
    name="|".join(COLLECTIONS),
    task="|".join(TASKS) or "(?!)",
    shard=r"s\d+",
    stage=f"{BASE}|{FINETUNE}",
    model="|".join(model.name for model in RUN.models),
    tag=r"[^/]+-[0-9a-f]{12}(?:-int8)?",


rule ingest_images:
    input:
        folder=image_folder,
        settings=settings_file("ingest"),
        collection=settings_file("collection", "{col}"),
    output:
        manifest=layout.manifest("{col}", IMAGES),
        rejects=layout.rejects("{col}"),
    log:
        layout.log("ingest_images", "{col}"),
    benchmark:
        layout.benchmark("ingest_images", "{col}")
    wildcard_constraints:
        col="|".join(RUN.of_kind(IMAGES, declared=True)) or "(?!)",
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
        scan_cache=layout.scan_cache("{col}"),
    script:
        "../scripts/ingest_images.py"


rule ingest_texts:
    input:
        unpack(text_set_inputs),
    output:
        manifest=layout.manifest("{tset}", TEXTS),
        rejects=layout.rejects("{tset}"),
    log:
        layout.log("ingest_texts", "{tset}"),
    wildcard_constraints:
        tset="|".join(RUN.of_kind(TEXTS, declared=True)) or "(?!)",
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    resources:
        mem_mb=2000,
        runtime=20,
    script:
        "../scripts/ingest_texts.py"


# A task's query list (the contest's 附件3/image_test.csv), checked against the collection it names.
rule ingest_query_list:
    input:
        unpack(query_list_inputs),
    output:
        manifest=layout.query_list("{task}"),
        rejects=layout.query_list_rejects("{task}"),
    log:
        layout.log("ingest_query_list", "{task}"),
    wildcard_constraints:
        task="|".join(n for n, t in TASKS.items() if t.query_list) or "(?!)",
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        collection_id_column=query_collection_id_column,
    script:
        "../scripts/ingest_query_list.py"
