# Input functions and targets of the stage in rules/index.smk.


def indexed_galleries():
    """The galleries an approximate index may serve: the tasks' galleries, or every collection
    of a run with no task (a photo library searched by the server)."""
    return RUN.galleries() if config["index"]["enabled"] else []


def index_targets():
    return [layout.served_index(name) for name in indexed_galleries()]


def index_wanted(name):
    """Whether the gallery is large enough (index.min_items) to be searched approximately."""
    from tuwen.files.parquet import row_count

    assignment = checkpoints.assign_shards.get(name=name).output["assignment"]
    return row_count(assignment) >= config["index"]["min_items"]


def index_plan(name):
    """(tag, shards trained on, segments as (start, count)) of a gallery's index: the training
    moves as the gallery grows, or when the last description found its centroids drifted.
    """
    from tuwen.ranking.index import planned_training, segment_plan

    shards = shards_of(name)
    tag = model_tag(MODELS[0])
    previous = None
    if os.path.exists(layout.served_index(name)):
        with open(layout.served_index(name), encoding="utf-8") as handle:
            described = json.load(handle)
        if described.get("model_tag") == tag:
            previous = described.get("index")
    growth = config["index"]["retrain_growth"]
    return (
        tag,
        planned_training(len(shards), growth, previous),
        segment_plan(len(shards), config["index"]["segment_base"]),
    )


def index_inputs(wildcards):
    """Everything describe_index reads: the trained index and its segments when the gallery is
    indexed, and always the feature shards (exact search, for the recall it measures).
    """
    name = wildcards.col
    inputs = {
        "assignment": layout.assignment(name),
        "settings": settings_file("index_search"),
    }
    if index_wanted(name):
        inputs["features"] = features_of(name, MODELS[0])
        tag, trained, segments = index_plan(name)
        inputs["trained"] = layout.index_trained(name, tag, str(trained))
        inputs["segments"] = [
            layout.index_segment(name, tag, str(trained), str(start), str(count))
            for start, count in segments
        ]
        queries = [t.queries for t in TASKS.values() if t.gallery == name]
        if queries:
            inputs["queries"] = features_of(queries[0], MODELS[0])
    return inputs


def features_from(name, start, count):
    """The feature shards of a collection from its `start`-th, `count` of them."""
    return features_of(name, MODELS[0])[int(start) : int(start) + int(count)]


def training_features(wildcards):
    return features_from(wildcards.col, 0, wildcards.trained)


def segment_features(wildcards):
    return features_from(wildcards.col, wildcards.start, wildcards.shards)
