"""PP-OCR on a CUDA GPU through torch: rapidocr's own ONNX models as torch modules, run inside
rapidocr's own pipeline in place of its onnxruntime sessions.

Why not onnxruntime-gpu: rapidocr-onnxruntime requires the CPU `onnxruntime`, and both
packages install the same import name, so one environment cannot hold both; torch, with its
CUDA libraries, is already in this one. onnx2torch turns each model's graph into torch
operations (the same weights, fp32), so detection, the angle classifier and recognition
read exactly the files the CPU engine reads; the pre- and post-processing (resizes, box
finding, CTC decoding) stay rapidocr's, on the CPU.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np


def _torch_ready_graph(model_path: Path):
    """Give the ONNX graph at `model_path` in the form onnx2torch converts.

    Paddle's exporter stores every weight as a Constant node, where onnx2torch looks for
    initializers; and ONNX's shape inference loses the rank of some convolutions' outputs
    behind reshapes of computed shapes, where onnx2torch needs it to pick BatchNorm's
    dimensionality: a convolution's output has its weight's rank.
    """
    import onnx
    from onnx import helper

    graph = onnx.load(str(model_path))
    kept = []
    for node in graph.graph.node:
        if node.op_type == "Constant" and [a.name for a in node.attribute] == ["value"]:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            graph.graph.initializer.append(tensor)
        else:
            kept.append(node)
    del graph.graph.node[:]
    graph.graph.node.extend(kept)
    graph = onnx.shape_inference.infer_shapes(graph)
    shaped = {info.name for info in graph.graph.value_info if info.type.tensor_type.HasField("shape")}
    weights = {tensor.name: tensor for tensor in graph.graph.initializer}
    for node in graph.graph.node:
        if node.op_type == "Conv" and node.output[0] not in shaped and node.input[1] in weights:
            rank = len(weights[node.input[1]].dims)
            graph.graph.value_info.append(
                helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, [None] * rank)
            )
    return graph


class TorchSession:
    """One PP-OCR model as a torch module on `device`, called like rapidocr's
    `OrtInferSession`: a float32 NCHW batch in, the list of the model's outputs out."""

    def __init__(self, model_path: str | Path, device: str):
        import torch
        from onnx2torch import convert

        self.device = torch.device(device)
        self.module = convert(_torch_ready_graph(Path(model_path))).eval().to(self.device)

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        import torch

        inputs = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        # Full fp32, as onnxruntime computes: torch lets cuDNN's convolutions use TF32 by
        # default, and with that, on an H200, the recogniser's probabilities were up to 6e-3
        # off onnxruntime's and the text read differed in 12% of the sample's photos.
        matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
                outputs = self._run(inputs)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return [output.float().cpu().numpy() for output in outputs]

    def _run(self, inputs):
        import torch

        with torch.inference_mode(), warnings.catch_warnings():
            # onnx2torch's Slice indexes with a list of slices, which torch still reads as a
            # tuple and warns it may not some day; tests/test_ocr.py compares the outputs with
            # onnxruntime's, so such a change would fail there, not pass unseen.
            warnings.filterwarnings("ignore", "Using a non-tuple sequence", UserWarning)
            return self.module(inputs)


def model_paths() -> dict[str, Path]:
    """Give rapidocr's model files (det, cls, rec), as its own configuration names them."""
    from rapidocr_onnxruntime.main import DEFAULT_CFG_PATH
    from rapidocr_onnxruntime.utils import read_yaml, update_model_path

    config = update_model_path(read_yaml(DEFAULT_CFG_PATH))
    sections = {"det": "Det", "cls": "Cls", "rec": "Rec"}
    return {part: Path(config[section]["model_path"]) for part, section in sections.items()}


def run_models_on_torch(engine, device: str):
    """Make a RapidOCR engine run its three models as torch modules on `device`; give it back."""
    paths = model_paths()
    engine.text_det.infer = TorchSession(paths["det"], device)
    engine.text_cls.infer = TorchSession(paths["cls"], device)
    engine.text_rec.session = TorchSession(paths["rec"], device)
    return engine
