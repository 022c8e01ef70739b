"""ONNX Runtime towers: exported from cn_clip's model, they give torch's embeddings."""

import numpy as np
import pytest
import torch

from tuwen.clip.architectures import architecture
from tuwen.clip.encode import tokenize_captions
from tuwen.clip.models import build_model
from tuwen.clip.onnx_towers import OnnxTower, cosines, export_tower, quantize_tower

CAPTIONS = ["一只小猫在草地上玩耍", "两个人在海边散步，夕阳西下", "红色的汽车停在路边", "桌上有一碗面条"]


@pytest.mark.parametrize("name", ["tuwen-tiny-rn", "tuwen-tiny"])
def test_exported_towers_give_torchs_embeddings_at_any_batch(name, tmp_path):
    arch = architecture(name)
    model = build_model(arch, 0).eval()
    tokens = tokenize_captions(CAPTIONS)
    pixels = torch.randn((3, 3, arch.resolution, arch.resolution), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = {"text": model.encode_text(tokens).numpy(), "image": model.encode_image(pixels).numpy()}
    for tower, inputs in (("text", tokens), ("image", pixels)):
        run = OnnxTower(export_tower(model, arch, tower, tmp_path / f"{tower}.onnx"), threads=1)
        assert cosines(expected[tower], run(inputs)).min() >= 0.9999, tower
        assert cosines(expected[tower][:1], run(inputs[:1])).min() >= 0.9999  # a batch of one
    # Exporting leaves the model in eval mode: its own embeddings are unchanged afterwards.
    assert not any(module.training for module in model.modules())
    with torch.inference_mode():
        assert np.allclose(model.encode_text(tokens).numpy(), expected["text"], atol=1e-5)


def test_an_int8_text_tower_stays_close_and_is_smaller(tmp_path):
    arch = architecture("tuwen-tiny")
    model = build_model(arch, 0).eval()
    tokens = tokenize_captions(CAPTIONS)
    fp32 = export_tower(model, arch, "text", tmp_path / "text.onnx")
    int8 = quantize_tower(fp32, tmp_path / "text.int8.onnx")
    with torch.inference_mode():
        expected = model.encode_text(tokens).numpy()
    agreement = cosines(expected, OnnxTower(int8)(tokens))
    assert agreement.min() > 0.9 and int8.stat().st_size < fp32.stat().st_size


def test_an_unknown_tower_is_refused(tmp_path):
    arch = architecture("tuwen-tiny")
    with pytest.raises(ValueError, match="one of text, image"):
        export_tower(build_model(arch, 0), arch, "audio", tmp_path / "a.onnx")
