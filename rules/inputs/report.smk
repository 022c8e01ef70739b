# Input functions and targets of the stage in rules/report.smk.


def report_targets():
    outputs = [layout.summary("accounting.csv")]
    for task in TASKS:
        outputs += figure_files(task)
        outputs.append(layout.figure(task, "score_histogram.png"))
    if judged_tasks():
        outputs.append(layout.evaluation("metrics.json"))
    if config["browse"]["enabled"]:
        outputs.append(layout.browse("index.html"))
    return outputs


def query_kind(wildcards):
    return TASKS[wildcards.task].query_kind


def figure_inputs(wildcards):
    task = TASKS[wildcards.task]
    return {
        "topk": layout.topk(task.name),
        "captions": manifest(task.text_side),
        "images": manifest(task.image_side),
    }


FIGURE_COUNT = config["figures"]["queries_per_task"]


def figure_files(task):
    return [layout.figure(task, f"query_{i}.png") for i in range(FIGURE_COUNT)]


def accounting_plan(wildcards):
    """What account_inputs reads, collection by collection and task by task."""
    return plans.accounting_plan(RUN, MODELS[0], RUN_FILES)


def accounting_inputs(wildcards):
    return plans.plan_inputs(accounting_plan(wildcards))


def evaluation_inputs(wildcards):
    judged = judged_tasks()
    return {
        "topk": [layout.topk(name) for name in judged],
        "gallery_assignments": [layout.assignment(t.gallery) for t in judged.values()],
        "ground_truth": [t.ground_truth.file for t in judged.values()],
        "settings": settings_file("ground_truth"),
    }


def browse_inputs(wildcards):
    """The page shows every task's ranked hits and every searchable collection's items."""
    shown = RUN.searchable()
    inputs = {
        "topk": [layout.topk(name) for name in TASKS],
        "collections": [manifest(name) for name in shown],
        "settings": settings_file("browse"),
    }
    if judged_tasks():
        inputs["ground_truth"] = [t.ground_truth.file for t in judged_tasks().values()]
        inputs["ground_truth_settings"] = settings_file("ground_truth")
    return inputs
