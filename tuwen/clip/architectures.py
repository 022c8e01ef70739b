"""Architecture names, importable without torch (the Snakefile reads them at parse time)."""

from __future__ import annotations

from dataclasses import dataclass

from tuwen.errors import TuwenError

CONTEXT_LENGTH = 52  # cn_clip's text context for every released model: [CLS] + 50 + [SEP]


@dataclass(frozen=True)
class Architecture:
    """A CN-CLIP architecture: cn_clip's vision and text config names and input resolution."""

    name: str
    vision: str
    text: str
    resolution: int

    @property
    def struct(self) -> str:
        """Give cn_clip's `vision@text` model name."""
        return f"{self.vision}@{self.text}"


@dataclass(frozen=True)
class ReleasedModel:
    """Where cn_clip fetches a released model's weights: Hugging Face repo OFA-Sys/{repo}, file {file}."""

    arch: Architecture
    repo: str
    file: str


# cn_clip's released models (its README's table). cn_clip keeps the same facts in private
# tables; a test holds these equal to them, so an upgrade that changes one is caught.
RELEASED_MODELS = {
    model.arch.name: model
    for model in (
        ReleasedModel(
            Architecture("ViT-B-16", "ViT-B-16", "RoBERTa-wwm-ext-base-chinese", 224),
            "chinese-clip-vit-base-patch16",
            "clip_cn_vit-b-16.pt",
        ),
        ReleasedModel(
            Architecture("ViT-L-14", "ViT-L-14", "RoBERTa-wwm-ext-base-chinese", 224),
            "chinese-clip-vit-large-patch14",
            "clip_cn_vit-l-14.pt",
        ),
        ReleasedModel(
            Architecture("ViT-L-14-336", "ViT-L-14-336", "RoBERTa-wwm-ext-base-chinese", 336),
            "chinese-clip-vit-large-patch14-336px",
            "clip_cn_vit-l-14-336.pt",
        ),
        ReleasedModel(
            Architecture("ViT-H-14", "ViT-H-14", "RoBERTa-wwm-ext-large-chinese", 224),
            "chinese-clip-vit-huge-patch14",
            "clip_cn_vit-h-14.pt",
        ),
        ReleasedModel(
            Architecture("RN50", "RN50", "RBT3-chinese", 224),
            "chinese-clip-rn50",
            "clip_cn_rn50.pt",
        ),
    )
}

# Small architectures for the offline demo and tests; their configs ship in tuwen/model_configs.
SMALL_ARCHITECTURES = {
    "tuwen-tiny": Architecture("tuwen-tiny", "tuwen-tiny-vit", "tuwen-tiny-bert", 64),
    "tuwen-tiny-rn": Architecture("tuwen-tiny-rn", "tuwen-tiny-rn", "tuwen-tiny-bert", 64),
    # The same, embedding in 512 dimensions as ViT-B-16 does: search benchmarks at CLIP's width.
    "tuwen-tiny-512": Architecture("tuwen-tiny-512", "tuwen-tiny-rn-512", "tuwen-tiny-bert", 64),
}


class ModelError(TuwenError):
    """A model that cannot be built or loaded, with what to do about it."""


def architecture(name: str) -> Architecture:
    """Give the architecture called `name` (a cn_clip model name or a small test architecture)."""
    if name in SMALL_ARCHITECTURES:
        return SMALL_ARCHITECTURES[name]
    if name in RELEASED_MODELS:
        return RELEASED_MODELS[name].arch
    known = ", ".join([*RELEASED_MODELS, *SMALL_ARCHITECTURES])
    raise ModelError(f"unknown model '{name}'; known models: {known}")
