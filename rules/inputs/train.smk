# Input functions and targets of the stage in rules/train.smk.


def train_inputs(wildcards):
    model = MODEL_BY_NAME[wildcards.model]
    inputs = {}
    if model.train["lock_image"]:
        inputs["locked_features"] = features_of(TRAIN_IMAGES, model, layout.BASE)
    return inputs


def train_settings(wildcards):
    return settings_file("train", wildcards.model)


def base_card(wildcards):
    return layout.model_card(wildcards.model, layout.BASE)


def train_state_path(wildcards):
    return layout.train_state(wildcards.model)


def training_targets():
    return [
        layout.fine_tuned(model.name, name)
        for model in TRAINED
        for name in ("curves.png", "val_metrics.csv")
    ]
