# Stages 5-6, similarity and tables: queries x each gallery shard, merged top-K, result CSVs.


rule gather_queries:
    input:
        unpack(query_inputs),
        card=MODEL_CARD,
    output:
        queries="results/retrieval/{task}/queries.parquet",
        unencoded="results/retrieval/{task}/unencoded_queries.csv",
    localrule: True
    log:
        "results/logs/gather_queries/{task}.log",
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/gather_queries.py"


rule partial_topk:
    input:
        unpack(partial_inputs),
        card=MODEL_CARD,
    output:
        "results/retrieval/{task}/partial/{shard}.parquet",
    params:
        keep_top=config["retrieval"]["keep_top"],
    log:
        "results/logs/partial_topk/{task}/{shard}.log",
    benchmark:
        "results/benchmarks/partial_topk/{task}/{shard}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/model.yaml"
    script:
        "../scripts/partial_topk.py"


rule merge_topk:
    input:
        unpack(merge_inputs),
        card=MODEL_CARD,
    output:
        "results/retrieval/{task}/topk.parquet",
    params:
        keep_top=config["retrieval"]["keep_top"],
    localrule: True
    log:
        "results/logs/merge_topk/{task}.log",
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/merge_topk.py"


rule dense_similarity:
    input:
        unpack(dense_inputs),
    output:
        matrix="results/retrieval/{task}/similarity.npy",
        query_ids="results/retrieval/{task}/similarity_query_ids.txt",
        target_ids="results/retrieval/{task}/similarity_target_ids.txt",
    localrule: True
    log:
        "results/logs/dense_similarity/{task}.log",
    resources:
        mem_mb=8000,
        runtime=30,
    conda:
        "../envs/data.yaml"
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
    wildcard_constraints:
        number="1|2",
    params:
        task=table_task,
    localrule: True
    log:
        "results/logs/result_table/result{number}.log",
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/result_table.py"
