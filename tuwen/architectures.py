"""Architecture names, importable without torch (the Snakefile reads them at parse time)."""

from __future__ import annotations

from dataclasses import dataclass

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


# Small architectures for the offline demo and tests; their configs ship in tuwen/model_configs.
SMALL_ARCHITECTURES = {
    "tuwen-tiny": Architecture("tuwen-tiny", "tuwen-tiny-vit", "tuwen-tiny-bert", 64),
    "tuwen-tiny-rn": Architecture("tuwen-tiny-rn", "tuwen-tiny-rn", "tuwen-tiny-bert", 64),
}
