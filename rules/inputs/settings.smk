# Input functions and targets of the stage in rules/settings.smk.


def used_settings_groups():
    """The settings files (tuwen/settings.py) of the stages this run has."""
    groups = ["run", "ingest", "encode_images", "retrieval", "figures"]
    groups += [group_name("collection", n) for n, c in COLLECTIONS.items() if c.source]
    groups += [group_name("task", name) for name in TASKS]
    groups += [group_name("model", model.name) for model in MODELS]
    groups += [group_name("train", model.name) for model in TRAINED]
    groups += ["demo"] if RUN.demo else []
    groups += ["validation", "fusion"] if FUSE else []
    groups += ["ocr"] if USE_OCR else []
    groups += ["sentences"] if TEXT_ENCODERS else []
    groups += ["browse"] if config["browse"]["enabled"] else []
    groups += ["ground_truth"] if judged_tasks() else []
    return list(dict.fromkeys(groups))


def decision_files():
    """Every checkpoint output and settings file the run reads, as targets of `all`.

    Snakemake checks a job's params and inputs for changes only once its checkpoint inputs
    are known, and it resolves in one round only the checkpoints that the first DAG reaches:
    a job two checkpoints deep (fusion's tuning, behind the validation shards) is then never
    checked. Asking for every registry, model card and settings file up front puts them all
    in the first DAG, so a changed setting reruns its jobs on every path.
    """
    return (
        [layout.settings(group) for group in used_settings_groups()]
        + [layout.assignment(name) for name in used_collections()]
        + all_cards()
    )
