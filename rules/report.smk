# Stages 7-8, figures and evaluation, plus the run's accounting of every input id.


rule query_figures:
    input:
        unpack(figure_inputs),
        settings=settings_file("figures"),
    output:
        figures=report(
            [layout.figure("{task}", f"query_{i}.png") for i in range(FIGURE_COUNT)],
            caption="../report/query_figure.rst",
            category="Ranked hits",
            subcategory="{task}",
        ),
        histogram=report(
            layout.figure("{task}", "score_histogram.png"),
            caption="../report/score_histogram.rst",
            category="Scores",
        ),
    log:
        layout.log("query_figures", "{task}"),
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        query_kind=query_kind,
    script:
        "../scripts/query_figures.py"


rule evaluate:
    input:
        unpack(evaluation_inputs),
    output:
        metrics=layout.evaluation("metrics.json"),
        table=report(
            layout.evaluation("metrics.csv"),
            caption="../report/metrics.rst",
            category="Evaluation",
        ),
        cn_clip=plans.cn_clip_evaluation_files(RUN),
    log:
        layout.log("evaluate"),
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        tasks={name: task.query_kind for name, task in RUN.judged_tasks().items()},
    script:
        "../scripts/evaluate.py"


# Zero-shot beside fine-tuned, per model and direction, in the form of CN-CLIP's Results.md.
rule results_table:
    input:
        unpack(results_table_inputs),
    output:
        table=layout.evaluation("results.csv"),
        markdown=report(
            layout.evaluation("results.md"),
            caption="../report/results.rst",
            category="Evaluation",
        ),
    log:
        layout.log("results_table"),
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        plan=results_table_plan,
        models=[model.name for model in RUN.models],
    script:
        "../scripts/results_table.py"


rule account_inputs:
    input:
        unpack(accounting_inputs),
    output:
        accounting=report(
            layout.summary("accounting.csv"),
            caption="../report/accounting.rst",
            category="Accounting",
        ),
        not_encoded=layout.summary("not_encoded.csv"),
    log:
        layout.log("account_inputs"),
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        plan=accounting_plan,
    script:
        "../scripts/account_inputs.py"


rule browse_page:
    input:
        unpack(browse_inputs),
    output:
        page=layout.browse("index.html"),
        script=layout.browse("browse.js"),
        style=layout.browse("browse.css"),
        data=layout.browse("data.js"),
    log:
        layout.log("browse_page"),
    localrule: True
    conda:
        "../envs/tuwen.yaml"
    threads: INGEST_THREADS
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        shown=5,
        tasks={
            name: {
                "query_kind": task.query_kind,
                "text_side": task.text_side,
                "image_side": task.image_side,
            }
            for name, task in TASKS.items()
        },
        collections={name: COLLECTIONS[name].kind for name in RUN.searchable()},
        notice=untrained_notice(RUN),
    script:
        "../scripts/browse_page.py"
