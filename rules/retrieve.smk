# Stages 5-6, similarity and tables: queries x the whole gallery, exact top-K, result CSVs.


rule gather_queries:
    input:
        unpack(query_inputs),
        card=MODEL_CARD,
    output:
        queries="results/retrieval/{task}/queries.parquet",
        unencoded="results/retrieval/{task}/unencoded_queries.csv",
    log:
        "results/logs/gather_queries/{task}.log",
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        "../scripts/gather_queries.py"


if not FUSION["enabled"]:

    # One job per direction over every gallery shard: at contest size the exact search is about
    # a second of BLAS, less than one job's start-up, so a job per shard would only add start-ups.
    rule search_topk:
        input:
            unpack(search_inputs),
            card=MODEL_CARD,
            settings=settings_file("retrieval"),
        output:
            "results/retrieval/{task}/topk.parquet",
        log:
            "results/logs/search_topk/{task}.log",
        benchmark:
            "results/benchmarks/search_topk/{task}.tsv"
        localrule: True
        conda:
            "../envs/tuwen.yaml"
        threads: 2
        resources:
            mem_mb=4000,
            runtime=30,
        script:
            "../scripts/search_topk.py"

else:

    # The fused search (rules/fusion.smk's settings): every channel of every query x gallery item.
    rule fused_search:
        input:
            unpack(fused_search_inputs),
            chosen="results/fusion/chosen.json",
            settings=settings_file("retrieval"),
        output:
            "results/retrieval/{task}/topk.parquet",
        log:
            "results/logs/fused_search/{task}.log",
        benchmark:
            "results/benchmarks/fused_search/{task}.tsv"
        localrule: True
        conda:
            "../envs/tuwen.yaml"
        threads: 2
        resources:
            mem_mb=8000,
            runtime=60,
        params:
            stages=STAGES,
        script:
            "../scripts/fused_search.py"


rule dense_similarity:
    input:
        unpack(search_inputs),
    output:
        matrix="results/retrieval/{task}/similarity.npy",
        query_ids="results/retrieval/{task}/similarity_query_ids.txt",
        target_ids="results/retrieval/{task}/similarity_target_ids.txt",
    log:
        "results/logs/dense_similarity/{task}.log",
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    resources:
        mem_mb=8000,
        runtime=30,
    script:
        "../scripts/dense_similarity.py"


rule result_table:
    input:
        topk=table_topk,
    output:
        report(
            "results/result{number}.csv",
            caption="../report/result_table.rst",
            category="Result tables",
        ),
    log:
        "results/logs/result_table/result{number}.log",
    wildcard_constraints:
        number="1|2",
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        task=table_task,
    script:
        "../scripts/result_table.py"
