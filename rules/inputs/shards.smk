# Input functions and targets of the stage in rules/shards.smk.


def used_collections():
    """Collections whose shard registry this run reads: every declared one (searched or
    served), the training images where locked-image training reads their features, and
    fusion's validation collections."""
    used = RUN.searchable()
    if any(model.train["lock_image"] for model in TRAINED):
        used.append(TRAIN_IMAGES)
    if FUSE:
        used += [
            name
            for task in RUN.validation_tasks.values()
            for name in (task.queries, task.gallery)
        ]
    return list(dict.fromkeys(used))


def manifest_of(wildcards):
    return manifest(wildcards.name)


def shard_size_key(wildcards):
    """Which key of `shards` sizes this collection's new shards (read in the job: a size
    applies to shards made from then on, so changing it reruns nothing)."""
    return "size" if COLLECTIONS[wildcards.name].holds_images else "text_size"


def collection_kind(wildcards):
    return kind_of(wildcards.name)


def shards_of(name):
    """Active shards of a collection, from its registry checkpoint."""
    import pandas as pd

    assignment = checkpoints.assign_shards.get(name=name).output["assignment"]
    return sorted(set(pd.read_parquet(assignment, columns=["shard"])["shard"]))


def shard_list(wildcards):
    """A shard's item list; written by the registry checkpoint, never by a rule of its own."""
    name = (
        getattr(wildcards, "col", None)
        or getattr(wildcards, "tset", None)
        or wildcards.name
    )
    checkpoints.assign_shards.get(name=name)
    return layout.shard_list(name, wildcards.shard)
