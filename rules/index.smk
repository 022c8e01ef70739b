# Approximate search (index.enabled): per gallery of at least index.min_items items, a faiss
# IVF index of the ranking model's feature shards (fast-scan codes, candidates re-scored from
# float16 rows), trained on its first shards and grown by segments (tuwen.ranking.index), with
# its recall@10 against exact search measured on every change, for each kind of query.
# The result tables stay exact; the server searches through the index.


rule train_index:
    input:
        features=training_features,
        settings=settings_file("index"),
    output:
        layout.index_trained("{col}", "{tag}", "{trained}"),
    log:
        layout.log("train_index", "{col}", "{tag}", "{trained}"),
    benchmark:
        layout.benchmark("train_index", "{col}", "{tag}", "{trained}")
    wildcard_constraints:
        col="[^/]+",
        tag="[^/]+",
        trained=r"\d+",
    conda:
        "../envs/tuwen.yaml"
    threads: HEAVY_JOB_THREADS
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../scripts/train_index.py"


rule index_segment:
    input:
        trained=layout.index_trained("{col}", "{tag}", "{trained}"),
        features=segment_features,
    output:
        codes=layout.index_segment("{col}", "{tag}", "{trained}", "{start}", "{shards}"),
        rows=layout.index_segment_rows(
            "{col}", "{tag}", "{trained}", "{start}", "{shards}"
        ),
    log:
        layout.log("index_segment", "{col}", "{tag}", "{trained}", "{start}-{shards}"),
    benchmark:
        layout.benchmark(
            "index_segment", "{col}", "{tag}", "{trained}", "{start}-{shards}"
        )
    wildcard_constraints:
        col="[^/]+",
        tag="[^/]+",
        trained=r"\d+",
        start=r"\d+",
        shards=r"\d+",
    conda:
        "../envs/tuwen.yaml"
    threads: HEAVY_JOB_THREADS
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../scripts/index_segment.py"


rule describe_index:
    input:
        unpack(index_inputs),
    output:
        layout.served_index("{col}"),
    log:
        layout.log("describe_index", "{col}"),
    benchmark:
        layout.benchmark("describe_index", "{col}")
    wildcard_constraints:
        col="[^/]+",
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../scripts/describe_index.py"
