# Input functions and targets of the stage in rules/models.smk.

from tuwen.clip.architectures import SMALL_ARCHITECTURES


def base_checkpoint(model):
    """The checkpoint file a model's base weights are read from; [] when cn_clip fetches
    released weights."""
    if model.checkpoint:
        return os.path.expanduser(model.checkpoint)
    if model.name in SMALL_ARCHITECTURES:
        return layout.init_checkpoint(model.name, config["seed"])
    return []


def model_checkpoint(wildcards):
    model = MODEL_BY_NAME[wildcards.model]
    if wildcards.stage == layout.BASE:
        return base_checkpoint(model)
    return layout.fine_tuned(model.name, "checkpoint.pt")


def model_card_settings(wildcards):
    return settings_file("model", wildcards.model)


def card_of(model, stage=None):
    return layout.model_card(model.name, stage or model.retrieval_stage)


# Rules that depend on a model's tag also list its card as a plain input: that puts the
# describe_model checkpoint in the DAG from the start, so Snakemake resolves it before it
# builds jobs (such as a new shard's) whose input functions ask for the tag.
RANKING_CARD = card_of(MODELS[0])


def model_tag(model, stage=None):
    stage = stage or model.retrieval_stage
    card = checkpoints.describe_model.get(model=model.name, stage=stage).output.card
    with open(card, encoding="utf-8") as handle:
        return json.load(handle)["tag"]


def all_cards():
    return [card_of(model, stage) for model in MODELS for stage in model.stages]


def card_for_tag(wildcards):
    """The model card whose tag names the features asked for.

    Cards already written are read directly; if none matches (features asked for before
    any card exists), the checkpoint API makes Snakemake describe the models first.
    """
    for path in all_cards():
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                if json.load(handle)["tag"] == wildcards.tag:
                    return path
    for model in MODELS:
        for stage in model.stages:
            if model_tag(model, stage) == wildcards.tag:
                return card_of(model, stage)
    raise WorkflowError(
        f"features of model {wildcards.tag} were asked for, but no configured model has that tag; "
        "features of different models are never mixed"
    )
