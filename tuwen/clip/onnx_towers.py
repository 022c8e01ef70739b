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

In a run, `export_model_towers` writes both towers of one model stage beside its card with
a description (towers.json) that says how closely they agree with torch on fixed inputs;
`choose_backend` is the one rule for which backend encodes: ONNX Runtime where the
export is exact (cosine >= EXACT_COSINE to torch), torch otherwise and on CUDA, and ONNX
Runtime always for an int8 model (its tag says int8: no torch path gives its embeddings).
"""

from __future__ import annotations

import json
import os
import tempfile
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from cn_clip.clip.model import CLIP

from tuwen.clip.architectures import CONTEXT_LENGTH, Architecture
from tuwen.clip.cards import ModelCard
from tuwen.errors import TuwenError
from tuwen.files.atomic import atomic_path, write_text_atomic
from tuwen.files.parquet import l2_normalised

TOWERS = ("text", "image")
TORCH, ONNXRUNTIME, AUTO = "torch", "onnxruntime", "auto"
FP32, INT8 = "fp32", "int8"
# An exported tower is exact when each of its embeddings of the fixed inputs has at least
# this cosine to torch's: then it may encode by default, in place of torch.
EXACT_COSINE = 0.9999
# An int8 image tower is kept only where it holds up this well on the fixed pictures (a
# small ViT's does not: 0.990); otherwise an int8 model's image tower stays fp32.
INT8_IMAGE_COSINE = 0.999
# The fixed inputs an export is checked on: captions of everyday scenes, and pictures of
# seeded noise of several sizes through cn_clip's own transform (resize included).
AGREEMENT_CAPTIONS = (
    "一只小猫在草地上玩耍",
    "两个人在海边散步，夕阳西下",
    "红色的汽车停在路边",
    "桌上有一碗热腾腾的面条",
    "穿着白色连衣裙的女孩在花园里",
    "城市夜景，高楼灯火通明",
    "一家人在公园里野餐",
    "雪山下的湖泊倒映着蓝天",
)
AGREEMENT_PICTURE_SIDES = (96, 160, 320, 480)


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


def agreement_inputs(arch: Architecture) -> dict[str, torch.Tensor]:
    """Give the fixed inputs of each tower that an export is checked on."""
    from cn_clip.clip import image_transform, tokenize
    from PIL import Image

    generator = np.random.default_rng(0)
    transform = image_transform(arch.resolution)
    pictures = [
        Image.fromarray(generator.integers(0, 256, (side, side + 32, 3), dtype=np.uint8))
        for side in AGREEMENT_PICTURE_SIDES
    ]
    return {
        "text": tokenize(list(AGREEMENT_CAPTIONS), context_length=CONTEXT_LENGTH),
        "image": torch.stack([transform(picture) for picture in pictures]),
    }


def export_model_towers(model: CLIP, card: ModelCard, folder: str | os.PathLike) -> dict:
    """Export both towers of `model` (the card's weights, float32 on the CPU) into `folder`,
    int8 where the card says so, and write their description, `towers.json`: the files, each
    tower's precision, and its lowest cosine to torch's fp32 embeddings of the fixed inputs.

    An int8 model's text tower is always int8; its image tower only where int8 holds up
    (cosine >= INT8_IMAGE_COSINE on every fixed picture), else it stays fp32."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = model.float().eval()
    inputs = agreement_inputs(card.arch)
    description: dict = {
        "tag": card.tag,
        "precision": {},
        "towers": {},
        "cosine_to_torch": {},
        "dim": int(model.text_projection.shape[1]),
        "logit_scale": float(model.logit_scale.exp().item()),
        "measured_on": f"{len(AGREEMENT_CAPTIONS)} captions, {len(AGREEMENT_PICTURE_SIDES)} pictures (fixed)",
        "onnxruntime_version": version("onnxruntime"),
        "torch_version": torch.__version__,
    }
    threads = torch.get_num_threads()
    for tower in TOWERS:
        name = f"{tower}.onnx"
        with torch.inference_mode():
            expected = _Tower(model, tower)(inputs[tower]).numpy()
        precision = FP32
        if card.int8:
            with tempfile.TemporaryDirectory(dir=folder) as scratch:
                fp32 = export_tower(model, card.arch, tower, Path(scratch) / name)
                int8 = quantize_tower(fp32, Path(scratch) / f"{tower}.int8.onnx")
                agreement = cosines(expected, OnnxTower(int8, threads)(inputs[tower])).min()
                # What int8 measured, kept or not: whether it holds up depends on the CPU
                # (without VNNI, ONNX Runtime's u8 x s8 products can saturate).
                description.setdefault("int8_cosine_to_torch", {})[tower] = round(float(agreement), 6)
                kept = int8 if tower == "text" or agreement >= INT8_IMAGE_COSINE else fp32
                precision = INT8 if kept == int8 else FP32
                os.replace(kept, folder / name)
        else:
            export_tower(model, card.arch, tower, folder / name)
        found = OnnxTower(folder / name, threads)(inputs[tower])
        description["towers"][tower] = name
        description["precision"][tower] = precision
        description["cosine_to_torch"][tower] = round(float(cosines(expected, found).min()), 6)
    description["exact"] = min(description["cosine_to_torch"].values()) >= EXACT_COSINE
    write_text_atomic(folder / "towers.json", json.dumps(description, indent=2) + "\n")
    return description


def read_towers(path: str | os.PathLike) -> dict:
    """Give an export's description (towers.json)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def choose_backend(requested: str, device: str, towers: dict | None) -> tuple[str, str]:
    """Give the backend that encodes (torch or onnxruntime) and why, for a requested one (auto,
    torch, onnxruntime), the device encoding would run on, and the model's exported towers."""
    if towers is not None and INT8 in towers["precision"].values():
        return ONNXRUNTIME, "the model is int8, which ONNX Runtime runs (on the CPU)"
    if requested == TORCH:
        return TORCH, "asked for"
    if towers is None:
        if requested == ONNXRUNTIME:
            raise TuwenError("ONNX Runtime was asked for, but the model's towers were not exported")
        return TORCH, "no exported towers"
    if requested == ONNXRUNTIME:
        return ONNXRUNTIME, "asked for" + ("" if towers["exact"] else " (its export is not exact)")
    if device == "cuda":
        return TORCH, "CUDA (ONNX Runtime runs on the CPU here)"
    if not towers["exact"]:
        lowest = min(towers["cosine_to_torch"].values())
        return TORCH, f"its ONNX export agrees with torch only to cosine {lowest:.6f} (< {EXACT_COSINE})"
    return ONNXRUNTIME, f"its ONNX export is exact (cosine >= {EXACT_COSINE} to torch)"


class OnnxClip:
    """A model stage's exported towers, encoding as cn_clip's `CLIP` does: `encode_text`
    (token ids) and `encode_image` (pixels after cn_clip's transform), torch tensors in and
    out, on the CPU."""

    def __init__(self, description: str | os.PathLike, threads: int = 1):
        self.description = read_towers(description)
        folder = Path(description).parent
        towers = self.description["towers"]
        self.text_tower = OnnxTower(folder / towers["text"], threads)
        self.image_tower = OnnxTower(folder / towers["image"], threads)
        self.precision: dict[str, str] = self.description["precision"]  # per tower
        self.dim: int = self.description["dim"]
        self.logit_scale_value: float = self.description["logit_scale"]

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.text_tower(tokens.cpu()))

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.image_tower(pixels.cpu().float()))


def cosines(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Give the cosine of each row of `other` to the same row of `reference`."""
    return (l2_normalised(reference) * l2_normalised(other)).sum(axis=1)
