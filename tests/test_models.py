"""Models: seeded small architectures, cn_clip checkpoints both ways, clear errors."""

import contextlib
import io
from pathlib import Path

import cn_clip.clip as cn_clip
import pytest
import torch

from tuwen.clip.architectures import RELEASED_MODELS, ModelError, architecture
from tuwen.clip.cards import weights_tag
from tuwen.clip.models import build_model, checkpoint_digest, fetch_pretrained, load_model, save_checkpoint

TINY = architecture("tuwen-tiny")


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    model = build_model(TINY, seed=3).eval()
    save_checkpoint(model, path, TINY)
    return model, path


def test_same_seed_gives_same_weights_and_tag(tmp_path):
    for seed, name in [(0, "a"), (0, "b"), (1, "c")]:
        save_checkpoint(build_model(TINY, seed), tmp_path / f"{name}.pt", TINY)
    tags = {name: weights_tag(TINY.name, checkpoint_digest(tmp_path / f"{name}.pt")) for name in "abc"}
    assert tags["a"] == tags["b"] != tags["c"]
    assert tags["a"].startswith("tuwen-tiny-")


def test_checkpoint_round_trip_gives_same_embeddings(saved_tiny):
    model, path = saved_tiny
    loaded = load_model(TINY, path)
    images = torch.randn(2, 3, TINY.resolution, TINY.resolution)
    tokens = cn_clip.tokenize(["红色的圆形", "蓝色的星形"])
    with torch.inference_mode():
        assert torch.equal(loaded.encode_image(images), model.encode_image(images))
        assert torch.equal(loaded.encode_text(tokens), model.encode_text(tokens))


def test_cn_clip_own_loader_reads_our_checkpoint_as_we_do(tmp_path):
    # cn_clip's public loader knows only its released architectures: RN50 is the smallest.
    rn50 = architecture("RN50")
    path = tmp_path / "rn50.pt"
    save_checkpoint(build_model(rn50, seed=1), path, rn50)
    with contextlib.redirect_stdout(io.StringIO()):
        theirs, _ = cn_clip.load_from_name(
            str(path),
            device="cpu",
            vision_model_name=rn50.vision,
            text_model_name=rn50.text,
            input_resolution=rn50.resolution,
        )
    ours = load_model(rn50, path)
    images = torch.randn(2, 3, rn50.resolution, rn50.resolution)
    tokens = cn_clip.tokenize(["红色的圆形", "蓝色的星形"])
    with torch.inference_mode():
        assert torch.equal(theirs.eval().encode_image(images), ours.encode_image(images))
        assert torch.equal(theirs.encode_text(tokens), ours.encode_text(tokens))


def test_released_models_table_equals_cn_clips_own():
    from cn_clip.clip import utils

    assert set(RELEASED_MODELS) == set(utils.available_models())
    for name, released in RELEASED_MODELS.items():
        assert released.arch.struct == utils._MODEL_INFO[name]["struct"]
        assert released.arch.resolution == utils._MODEL_INFO[name]["input_resolution"]
        assert (released.repo, released.file) == utils._MODELS[name]


def test_small_architectures_are_never_written_into_cn_clip():
    folder = Path(cn_clip.__file__).parent / "model_configs"
    before = sorted(p.name for p in folder.iterdir())
    build_model(TINY, seed=0)
    assert sorted(p.name for p in folder.iterdir()) == before
    assert not [name for name in before if name.startswith("tuwen-")]


def test_checkpoint_of_another_architecture_is_a_short_clear_error(saved_tiny):
    _, path = saved_tiny
    with pytest.raises(ModelError) as error:
        load_model(architecture("RN50"), path)
    message = str(error.value)
    assert "does not fit architecture RN50" in message and len(message) < 600


def test_offline_pretrained_weights_error_names_the_file_to_place(tmp_path):
    with pytest.raises(ModelError) as error:
        fetch_pretrained("ViT-B-16", tmp_path)
    assert str(tmp_path / "clip_cn_vit-b-16.pt") in str(error.value)


def test_unknown_model_names_the_known_ones():
    with pytest.raises(ModelError, match="ViT-H-14"):
        architecture("ViT-X-99")
