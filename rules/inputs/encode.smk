# Input functions and targets of the stage in rules/encode.smk.


def features_of(name, model, stage=None):
    """A collection's current feature shards for one model stage (checkpoints: the card, the registry)."""
    tag = model_tag(model, stage)
    return [layout.features(tag, name, shard) for shard in shards_of(name)]


class RunFiles:
    """The files only the workflow knows (current shards, model tags), for tuwen.run.plans."""

    def features(self, collection, model, stage):
        return features_of(collection, model, stage)

    def ocr(self, collection):
        return [layout.ocr(collection, shard) for shard in shards_of(collection)]

    def sentences(self, collection, encoder):
        return [layout.sentences(encoder, collection, s) for s in shards_of(collection)]


RUN_FILES = RunFiles()
