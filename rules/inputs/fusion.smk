# Input functions and targets of the stage in rules/fusion.smk.


def fusion_targets():
    outputs = [layout.evaluation("fusion.csv")] if FUSE else []
    return outputs + ([layout.summary("ocr.csv")] if USE_OCR else [])


def fusion_plan(tasks, validation=False):
    """What a fusion job reads, task by task (tuwen.run.plans builds it)."""
    return {
        name: plans.fusion_task_plan(
            RUN,
            task,
            MODELS,
            RUN_FILES,
            FUSION["enabled"],
            USE_OCR,
            validation,
            TEXT_ENCODERS,
        )
        for name, task in tasks.items()
    }


def validation_fusion_plan(wildcards):
    return fusion_plan(RUN.validation_tasks, validation=True)


def validation_fusion_inputs(wildcards):
    return plans.plan_inputs(validation_fusion_plan(wildcards))


def judged_tasks():
    """The tasks with ground truth: evaluation and fusion's test rows score them."""
    return {name: task for name, task in TASKS.items() if task.ground_truth}


def test_fusion_plan(wildcards):
    return fusion_plan(judged_tasks())


def test_fusion_inputs(wildcards):
    inputs = plans.plan_inputs(test_fusion_plan(wildcards))
    inputs["ground_truth"] = [t.ground_truth.file for t in judged_tasks().values()]
    return inputs


def fused_task_plan(wildcards):
    return fusion_plan({wildcards.task: TASKS[wildcards.task]})[wildcards.task]


def fused_task_inputs(wildcards):
    return plans.plan_inputs(fused_task_plan(wildcards))


def ocr_plan(wildcards):
    return {name: RUN_FILES.ocr(name) for name in plans.ocr_collections(RUN)}


def ocr_inputs(wildcards):
    return plans.plan_inputs(ocr_plan(wildcards))
