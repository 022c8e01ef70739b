# Input functions and targets of the stage in rules/retrieve.smk.


def retrieval_targets():
    outputs = [layout.result_table(task.table) for task in TASKS.values() if task.table]
    for task in TASKS:
        outputs.append(layout.topk(task))
        if config["retrieval"]["dense_matrix"]:
            outputs.append(layout.retrieval(task, "similarity.npy"))
    return outputs


def query_features(wildcards):
    return features_of(TASKS[wildcards.task].queries, MODELS[0])


def query_order(wildcards):
    return plans.query_order(RUN, TASKS[wildcards.task])


def query_id_column(wildcards):
    return plans.query_id_column(RUN, TASKS[wildcards.task])


def query_assignment(wildcards):
    return layout.assignment(TASKS[wildcards.task].queries)


def gallery_assignment(wildcards):
    return layout.assignment(TASKS[wildcards.task].gallery)


def gallery_features(wildcards):
    return features_of(TASKS[wildcards.task].gallery, MODELS[0])


def task_settings(wildcards):
    return settings_file("task", wildcards.task)


def task_of_table(wildcards):
    return next(name for name, task in TASKS.items() if task.table == wildcards.table)


def topk_of_table(wildcards):
    return layout.topk(task_of_table(wildcards))


def table_settings(wildcards):
    return settings_file("task", task_of_table(wildcards))
