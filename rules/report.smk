# Stages 7-8, figures and evaluation, plus the run's accounting of every input id.


rule query_figures:
    input:
        unpack(figure_inputs),
    output:
        figures=report(
            expand("results/figures/{{task}}/query_{i}.png", i=range(FIGURE_COUNT)),
            caption="../report/query_figure.rst",
            category="Ranked hits",
            subcategory="{task}",
        ),
        histogram=report(
            "results/figures/{task}/score_histogram.png",
            caption="../report/score_histogram.rst",
            category="Scores",
        ),
    log:
        "results/logs/query_figures/{task}.log",
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/query_figures.py"


rule evaluate:
    input:
        unpack(evaluation_inputs),
    output:
        metrics="results/eval/metrics.json",
        table=report(
            "results/eval/metrics.csv",
            caption="../report/metrics.rst",
            category="Evaluation",
        ),
    log:
        "results/logs/evaluate.log",
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/evaluate.py"


rule account_inputs:
    input:
        unpack(accounting_inputs),
    output:
        accounting=report(
            "results/summary/accounting.csv",
            caption="../report/accounting.rst",
            category="Accounting",
        ),
        not_encoded="results/summary/not_encoded.csv",
    log:
        "results/logs/account_inputs.log",
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        encoded=encoded_collections(),
    script:
        "../scripts/account_inputs.py"


rule browse_page:
    input:
        unpack(browse_inputs),
    output:
        page="results/browse/index.html",
        script="results/browse/browse.js",
        style="results/browse/browse.css",
        data="results/browse/data.js",
    log:
        "results/logs/browse_page.log",
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    threads: INGEST_THREADS
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        shown=5,
    script:
        "../scripts/browse_page.py"
