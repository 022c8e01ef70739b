"""What a run must tell its user before any ranking: that its model has random weights.

A small architecture's seeded weights rank in the demo only because the workflow fine-tunes
them on the demo's pairs; a run that ranks with them untrained (a photo library with the
default model) gives noise, and says so in its closing summary, its page and every answer.
"""

from __future__ import annotations

from tuwen.clip.architectures import SMALL_ARCHITECTURES
from tuwen.run.declaration import Model, Run


def has_random_weights(model: Model) -> bool:
    """Whether a model's base weights are seeded random ones (a small architecture, no checkpoint)."""
    return not model.checkpoint and model.name in SMALL_ARCHITECTURES


def untrained_notice(declared: Run) -> str:
    """Give the warning for a run whose ranking model has random weights and is not fine-tuned
    ("" where its weights are pretrained, a checkpoint, or fine-tuned by the run)."""
    model = declared.ranking_model
    if not has_random_weights(model) or model.trains:
        return ""
    return (
        f"the ranking model {model.name} has random weights, neither pretrained nor fine-tuned: "
        "its rankings are noise. Set `models: [ViT-B-16]` (cn_clip's released weights, fetched "
        "once into weights_dir), a local checkpoint (`models: [{name: ViT-B-16, checkpoint: "
        "PATH}]`), or declare training pairs so that the run fine-tunes it."
    )
