# Stages 5-6, similarity and tables: queries x the whole gallery, exact top-K, result CSVs.


rule gather_queries:
    input:
        order=query_order,
        assignment=query_assignment,
        features=query_features,
        card=RANKING_CARD,
    output:
        queries=layout.retrieval("{task}", "queries.parquet"),
        unencoded=layout.retrieval("{task}", "unencoded_queries.csv"),
    log:
        layout.log("gather_queries", "{task}"),
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        id_column=query_id_column,
    script:
        "../scripts/gather_queries.py"


if not RUN.fuse:

    # One job per direction over every gallery shard: at contest size the exact search is about
    # a second of BLAS, less than one job's start-up, so a job per shard would only add start-ups.
    rule search_topk:
        input:
            queries=layout.retrieval("{task}", "queries.parquet"),
            assignment=gallery_assignment,
            features=gallery_features,
            card=RANKING_CARD,
            settings=settings_file("retrieval"),
            task=task_settings,
        output:
            layout.topk("{task}"),
        log:
            layout.log("search_topk", "{task}"),
        benchmark:
            layout.benchmark("search_topk", "{task}")
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

    # The fused search (rules/fusion.smk): every channel of every query x gallery item,
    # ranked by the combination chosen on validation.
    rule fused_search:
        input:
            unpack(fused_task_inputs),
            chosen=layout.fusion("chosen.json"),
            settings=settings_file("retrieval"),
            task=task_settings,
        output:
            topk=layout.topk("{task}"),
            bank=layout.query_bank("{task}"),
        log:
            layout.log("fused_search", "{task}"),
        benchmark:
            layout.benchmark("fused_search", "{task}")
        localrule: True
        conda:
            "../envs/tuwen.yaml"
        threads: 2
        resources:
            mem_mb=8000,
            runtime=60,
        params:
            plan=fused_task_plan,
        script:
            "../scripts/fused_search.py"


rule dense_similarity:
    input:
        queries=layout.retrieval("{task}", "queries.parquet"),
        assignment=gallery_assignment,
        features=gallery_features,
    output:
        matrix=layout.retrieval("{task}", "similarity.npy"),
        query_ids=layout.retrieval("{task}", "similarity_query_ids.txt"),
        target_ids=layout.retrieval("{task}", "similarity_target_ids.txt"),
    log:
        layout.log("dense_similarity", "{task}"),
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
        topk=topk_of_table,
        task=table_settings,
    output:
        report(
            layout.result_table("{table}"),
            caption="../report/result_table.rst",
            category="Result tables",
        ),
    log:
        layout.log("result_table", "{table}"),
    wildcard_constraints:
        table="|".join(re.escape(t.table) for t in TASKS.values() if t.table) or "(?!)",
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/result_table.py"
