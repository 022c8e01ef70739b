"""Model cards: which weights a model tag stands for (torch-free: rules, the reader of a
finished run and the server read them without loading a model)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from tuwen.clip.architectures import Architecture, architecture


def weights_tag(name: str, digest: str, int8: bool = False) -> str:
    """Give the tag that names a model's features on disk: its name plus its weights digest,
    and `-int8` when it encodes in int8 (its features never mix with the fp32 ones)."""
    return f"{name}-{digest[:12]}" + ("-int8" if int8 else "")


def read_card(path: str | os.PathLike) -> dict:
    """Give a model card's fields as written (tag, name, checkpoint, weights_sha256, ...)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class ModelCard:
    """What `describe_model` writes: which weights a model tag stands for."""

    tag: str
    name: str
    checkpoint: str
    weights_sha256: str
    int8: bool = False  # encodes through its int8 ONNX towers (tuwen.clip.onnx_towers)

    @property
    def arch(self) -> Architecture:
        """Give the card's architecture."""
        return architecture(self.name)

    def checkpoint_in(self, run: str | os.PathLike) -> Path:
        """Give the card's checkpoint as seen from the folder of the run it belongs to."""
        return Path(run) / self.checkpoint  # an absolute checkpoint stays as it is

    @classmethod
    def read(cls, path: str | os.PathLike) -> ModelCard:
        """Read a model card JSON file."""
        data = read_card(path)
        int8 = data.get("int8", False)  # cards written before int8 existed are fp32
        return cls(data["tag"], data["name"], data["checkpoint"], data["weights_sha256"], int8)

    def as_dict(self) -> dict:
        """Give the card as a JSON-ready dict."""
        arch = self.arch
        return {
            "tag": self.tag,
            "name": self.name,
            "checkpoint": self.checkpoint,
            "weights_sha256": self.weights_sha256,
            "int8": self.int8,
            "struct": arch.struct,
            "resolution": arch.resolution,
        }
