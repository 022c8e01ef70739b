# Input functions and targets of the stage in rules/ingest.smk.

IMAGE_FOLDERS = RUN.of_kind(layout.IMAGES, declared=True)
TEXT_SETS = RUN.of_kind(layout.TEXTS, declared=True)
QUERY_LIST_TASKS = [name for name, task in TASKS.items() if task.query_list]


def ingest_targets():
    """Every declared collection's manifest, with or without a task."""
    return [manifest(name) for name in RUN.searchable()]


def image_folder(wildcards):
    return COLLECTIONS[wildcards.col].source


def always_verify_decode(wildcards):
    """Decode this folder's images at ingest whatever ingest.verify_decode says? The training
    folder's: training reads its images every epoch and cannot drop a pair mid-run, so a bad
    file must be rejected first.
    """
    return wildcards.col == TRAIN_IMAGES


def text_set_inputs(wildcards):
    collection = COLLECTIONS[wildcards.tset]
    inputs = {
        "table": collection.source,
        "settings": settings_file("collection", wildcards.tset),
    }
    if collection.pairs_with:
        inputs["images"] = manifest(collection.pairs_with)
    return inputs


def query_collection_id_column(wildcards):
    return COLLECTIONS[TASKS[wildcards.task].queries].manifest_id


def query_list_inputs(wildcards):
    task = TASKS[wildcards.task]
    return {
        "table": task.query_list.file,
        "collection": manifest(task.queries),
        "settings": settings_file("task", task.name),
    }
