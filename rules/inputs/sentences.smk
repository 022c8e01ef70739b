# Input functions of the stage in rules/sentences.smk.


def sentence_card(wildcards):
    return layout.sentence_encoder_card(wildcards.encoder)


def sentence_inputs(wildcards):
    """A shard's item list, and for images the text OCR read in that shard."""
    inputs = {"shard_list": shard_list(wildcards)}
    if COLLECTIONS[wildcards.name].holds_images:
        inputs["ocr"] = layout.ocr(wildcards.name, wildcards.shard)
    return inputs
