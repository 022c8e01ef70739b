"""ONNX Runtime towers: exported from cn_clip's model, they give torch's embeddings."""

from pathlib import Path

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


# ---- a run's export: towers.json, the backend it chooses, int8 ---------------------------


def card_of(tmp_path, name: str, int8: bool = False):
    from tuwen.clip.cards import ModelCard, weights_tag
    from tuwen.clip.models import checkpoint_digest, save_checkpoint

    arch = architecture(name)
    model = build_model(arch, 3).eval()
    save_checkpoint(model, tmp_path / f"{name}.pt", arch)
    digest = checkpoint_digest(tmp_path / f"{name}.pt")
    card = ModelCard(weights_tag(name, digest, int8), name, str(tmp_path / f"{name}.pt"), digest, int8)
    return model, card


def demo_items(tmp_path, count: int = 80):
    """The demo's own pictures and captions, as an encode job's item lists."""
    import random

    import pandas as pd

    from tuwen.data.demo import ALL_SCENES, caption_of, draw_scene

    rows, captions = [], []
    for i, scene in enumerate(ALL_SCENES[:count]):
        path = tmp_path / f"scene-{i}.jpg"
        if not path.exists():
            draw_scene(scene, random.Random(i)).save(path, format="JPEG")
        rows.append((path.name, None, str(path)))
        captions.append((f"t{i}", None, caption_of(scene, random.Random(i))))
    columns = ["id", "digest", "source"]
    return pd.DataFrame(rows, columns=columns), pd.DataFrame(captions, columns=columns)


@pytest.mark.parametrize("name", ["tuwen-tiny-rn", "tuwen-tiny"])
def test_a_runs_fp32_export_is_exact_and_encodes_the_demo_as_torch_does(name, tmp_path):
    from tuwen.clip.encode import encode_images, encode_texts
    from tuwen.clip.onnx_towers import OnnxClip, export_model_towers, read_towers

    model, card = card_of(tmp_path, name)
    described = export_model_towers(model, card, tmp_path / "towers")
    assert read_towers(tmp_path / "towers/towers.json") == described
    assert described["exact"] and described["precision"] == {"text": "fp32", "image": "fp32"}
    assert min(described["cosine_to_torch"].values()) >= 0.9999 and described["tag"] == card.tag
    onnx = OnnxClip(tmp_path / "towers/towers.json")
    images, captions = demo_items(tmp_path)
    arch = card.arch
    for run in (
        lambda m: encode_images(m, images, arch.resolution, "cpu", 16, 0, None, progress=False),
        lambda m: encode_texts(m, captions, "cpu", 16, progress=False),
    ):
        expected, found = run(model), run(onnx)
        assert found.ids == expected.ids
        assert cosines(expected.embeddings, found.embeddings).min() >= 0.9999


def demo_pairs(tmp_path, count: int = 80):
    """Pairs of the demo's pictures and captions, as fine-tuning reads them."""
    import pandas as pd

    from tuwen.files.images import content_digest

    images, captions = demo_items(tmp_path, count)
    return pd.DataFrame(
        {
            "id": images["id"],
            "image_id": images["id"],
            "caption": captions["source"],
            "path": images["source"],
            "digest": [content_digest(Path(p).read_bytes()) for p in images["source"]],
        }
    )


def trained_model(tmp_path, name: str):
    """A small model fine-tuned on the demo by tuwen's own training: its scores are spread as
    a trained model's are (a random model's crowd within ~1e-4, and any change reorders them)."""
    from tuwen.train import FineTuner, TrainOptions

    arch = architecture(name)
    options = TrainOptions(
        epochs=30, batch_size=32, accum_steps=1, lr=1e-3, weight_decay=0.001, warmup_steps=2,
        val_fraction=0.25, lock_image=False, grad_checkpointing=False, precision="fp32", seed=0,
        num_workers=0, save_every_steps=100, device="cpu", preload_mb=2048,
    )  # fmt: skip
    tuner = FineTuner(build_model(arch, 3), arch, demo_pairs(tmp_path), options, tmp_path / "s.pt", "r", None)
    tuner.run()
    return tuner.model.eval()  # the last epoch's weights: trained, whatever validation says


def test_an_int8_export_agrees_with_fp32_retrieval_on_a_trained_model(tmp_path):
    """int8 against torch fp32 on the demo's 80 pictures and captions: cosine of every
    embedding, and the top-10 of every query in both directions."""
    from tuwen.clip.cards import ModelCard
    from tuwen.clip.encode import encode_images, encode_texts
    from tuwen.clip.models import save_checkpoint
    from tuwen.clip.onnx_towers import OnnxClip, export_model_towers
    from tuwen.ranking.recall import neighbour_recall
    from tuwen.ranking.topk import ranked_top

    model = trained_model(tmp_path, "tuwen-tiny-rn")
    save_checkpoint(model, tmp_path / "trained.pt", model_arch := architecture("tuwen-tiny-rn"))
    card = ModelCard("tuwen-tiny-rn-trained-int8", model_arch.name, str(tmp_path / "trained.pt"), "-", True)
    described = export_model_towers(model, card, tmp_path / "towers")
    assert described["precision"] == {"text": "int8", "image": "int8"}  # a ResNet's int8 holds up
    onnx = OnnxClip(tmp_path / "towers/towers.json")
    images, captions = demo_items(tmp_path)

    def embeddings(m):
        pictures = encode_images(m, images, model_arch.resolution, "cpu", 16, 0, None, progress=False)
        return pictures.embeddings, encode_texts(m, captions, "cpu", 16, progress=False).embeddings

    def top10(queries, gallery):
        return ranked_top(cosines_matrix(queries, gallery), 10)[1].reshape(len(queries), 10)

    (fp32_pictures, fp32_texts), (int8_pictures, int8_texts) = embeddings(model), embeddings(onnx)
    assert cosines(fp32_texts, int8_texts).min() >= 0.999
    assert cosines(fp32_pictures, int8_pictures).min() >= 0.999
    # The demo draws few scenes many times: near-copies tie within int8's error, so its top-10
    # is a floor for a real gallery's. Measured 2026-12-03: see bench/README.md.
    text_to_image = neighbour_recall(top10(int8_texts, int8_pictures), top10(fp32_texts, fp32_pictures))
    image_to_text = neighbour_recall(top10(int8_pictures, int8_texts), top10(fp32_pictures, fp32_texts))
    print(f"int8 top-10 agreement: text to image {text_to_image:.3f}, image to text {image_to_text:.3f}")
    assert text_to_image >= 0.85 and image_to_text >= 0.85


def cosines_matrix(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    from tuwen.files.parquet import l2_normalised

    return l2_normalised(queries) @ l2_normalised(gallery).T


def test_an_int8_image_tower_is_kept_exactly_where_it_holds_up(tmp_path, monkeypatch):
    from tuwen.clip import onnx_towers
    from tuwen.clip.onnx_towers import INT8_IMAGE_COSINE, export_model_towers

    # Whether int8 holds up depends on the CPU (tuwen-tiny's small ViT: ~0.990 on AVX2
    # without VNNI, above 0.999 with it): the export keeps what it measured.
    model, card = card_of(tmp_path, "tuwen-tiny", int8=True)
    described = export_model_towers(model, card, tmp_path / "towers")
    measured = described["int8_cosine_to_torch"]["image"]
    kept = "int8" if measured >= INT8_IMAGE_COSINE else "fp32"
    assert described["precision"] == {"text": "int8", "image": kept}
    assert described["cosine_to_torch"]["image"] == pytest.approx(measured if kept == "int8" else 1, abs=1e-4)
    # Where it does not hold up, the image tower stays fp32, exact to torch.
    monkeypatch.setattr(onnx_towers, "INT8_IMAGE_COSINE", measured + 1e-3)
    strict = export_model_towers(model, card, tmp_path / "strict")
    assert strict["precision"] == {"text": "int8", "image": "fp32"}
    assert strict["cosine_to_torch"]["image"] >= 0.9999


def test_the_backend_is_onnxruntime_only_where_it_is_exact_or_int8():
    from tuwen.clip.onnx_towers import choose_backend
    from tuwen.errors import TuwenError

    exact = {"exact": True, "precision": {"text": "fp32", "image": "fp32"}, "cosine_to_torch": {"text": 1.0}}
    loose = {**exact, "exact": False, "cosine_to_torch": {"text": 0.99, "image": 1.0}}
    int8 = {**loose, "precision": {"text": "int8", "image": "fp32"}}
    assert choose_backend("auto", "cpu", exact)[0] == "onnxruntime"
    assert choose_backend("auto", "cuda", exact)[0] == "torch"
    backend, why = choose_backend("auto", "cpu", loose)
    assert backend == "torch" and "0.990000" in why
    assert choose_backend("torch", "cpu", exact)[0] == "torch"
    assert choose_backend("onnxruntime", "cpu", loose)[0] == "onnxruntime"
    assert choose_backend("auto", "cpu", None)[0] == "torch"
    for requested, device in (("torch", "cpu"), ("auto", "cuda")):
        assert choose_backend(requested, device, int8)[0] == "onnxruntime"
    with pytest.raises(TuwenError, match="not exported"):
        choose_backend("onnxruntime", "cpu", None)
