"""A CN-CLIP model's two towers as ONNX graphs, run by ONNX Runtime on the CPU.

Each tower is exported alone, as cn_clip's own `deploy/pytorch_to_onnx.py` does, but with a
dynamic batch (cn_clip's exports take one item, Chinese-CLIP #47): the text tower takes
token ids `(batch, context_length)` and the image tower pixels `(batch, 3, resolution,
resolution)` after cn_clip's transform; both give unnormalised features, as
`encode_text` / `encode_image` do.

One trap is avoided on purpose: `torch.onnx.export` traces in eval mode and then restores
the mode of the module it was given. A fresh wrapper module is in training mode, so
restoring it switches the wrapped model's dropout back on, and every later torch
embedding is noise (cosine ~0.87 to the real ones on ViT-B-16's text tower). The
wrappers are put in eval mode before export, and the model is left as it was.

int8: dynamic quantisation (weights int8, activations quantised per batch at run time) of
a tower's MatMul/Gemm weights by ONNX Runtime's quantiser; convolutions stay fp32.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from cn_clip.clip.model import CLIP

from tuwen.clip.architectures import CONTEXT_LENGTH, Architecture
from tuwen.files.atomic import atomic_path
from tuwen.files.parquet import l2_normalised

TOWERS = ("text", "image")


class _Tower(torch.nn.Module):
    def __init__(self, model: CLIP, tower: str):
        super().__init__()
        self.model, self.tower = model, tower

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.tower == "text":
            return self.model.encode_text(inputs)
        return self.model.encode_image(inputs)


def example_input(arch: Architecture, tower: str, batch: int = 2) -> torch.Tensor:
    """Give an input of the tower's shape (the export traces it; the batch stays dynamic)."""
    if tower == "text":
        return torch.zeros((batch, CONTEXT_LENGTH), dtype=torch.long)
    return torch.zeros((batch, 3, arch.resolution, arch.resolution), dtype=torch.float32)


def export_tower(model: CLIP, arch: Architecture, tower: str, path: str | os.PathLike) -> Path:
    """Write one tower of `model` (float32, on the CPU) as an ONNX graph at `path`, atomically."""
    if tower not in TOWERS:
        raise ValueError(f"tower {tower!r}: one of {', '.join(TOWERS)}")
    was_training = model.training
    wrapper = _Tower(model, tower).eval()
    with atomic_path(path) as tmp, torch.no_grad():
        torch.onnx.export(
            wrapper,
            (example_input(arch, tower),),
            str(tmp),
            input_names=["inputs"],
            output_names=["features"],
            dynamic_axes={"inputs": {0: "batch"}, "features": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    model.train(was_training)
    return Path(path)


def quantize_tower(fp32_path: str | os.PathLike, int8_path: str | os.PathLike) -> Path:
    """Write the int8 (dynamic quantisation) version of an exported tower."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with atomic_path(int8_path) as tmp:
        # MatMul/Gemm only: a convolution's weight may reach the graph through a node, not
        # as an initializer, which the quantiser refuses (a ViT's patch embedding).
        quantize_dynamic(
            str(fp32_path), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"]
        )
    return Path(int8_path)


class OnnxTower:
    """One exported tower in an ONNX Runtime session on the CPU."""

    def __init__(self, path: str | os.PathLike, threads: int = 1):
        import onnxruntime as ort

        options = ort.SessionOptions()
        # One query at a time: its own threads, none spinning between queries.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, inputs: np.ndarray | torch.Tensor) -> np.ndarray:
        array = inputs.numpy() if isinstance(inputs, torch.Tensor) else inputs
        return self.session.run(None, {"inputs": np.ascontiguousarray(array)})[0]


def cosines(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Give the cosine of each row of `other` to the same row of `reference`."""
    return (l2_normalised(reference) * l2_normalised(other)).sum(axis=1)
