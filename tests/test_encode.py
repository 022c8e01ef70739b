"""Encoding shards: the feature-shard contract, and agreement with cn_clip's own pipeline."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from cn_clip.clip import image_transform, tokenize
from PIL import Image

from tests.conftest import CPU_AND_CUDA
from tuwen.clip.architectures import architecture
from tuwen.clip.cards import ModelCard, weights_tag
from tuwen.clip.encode import encode_shard
from tuwen.clip.models import build_model, checkpoint_digest, save_checkpoint
from tuwen.data.demo import ALL_SCENES, draw_scene
from tuwen.errors import TuwenError
from tuwen.files.parquet import read_features, write_features
from tuwen.run.declaration import IMAGES, TEXTS
from tuwen.run.schema import schema_default

LIMIT = schema_default("ingest.max_image_pixels")

TINY = architecture("tuwen-tiny")
# The device path's tests (CPU_AND_CUDA) run on the CPU here (torchvision's CPU decoder,
# the same tensor resize) and on CUDA in `make check-gpu` (nvjpeg): the same assertions.


def make_card(tmp_path):
    model = build_model(TINY, seed=7).eval()
    save_checkpoint(model, tmp_path / "tiny.pt", TINY)
    digest = checkpoint_digest(tmp_path / "tiny.pt")
    card = ModelCard(weights_tag(TINY.name, digest), TINY.name, str(tmp_path / "tiny.pt"), digest)
    (tmp_path / "model.json").write_text(json.dumps(card.as_dict()))
    return model, tmp_path / "model.json"


def write_list(path, rows):
    pq.write_table(pa.Table.from_pandas(pd.DataFrame(rows, columns=["id", "digest", "source"])), path)


def test_image_shard_matches_cn_clip_preprocessing_and_contract(tmp_path):
    import random

    from tuwen.files.images import content_digest

    model, card = make_card(tmp_path)
    rows = []
    for i, scene in enumerate(ALL_SCENES[:5]):
        path = tmp_path / f"Image-{i}.jpg"
        draw_scene(scene, random.Random(i)).save(path, format="JPEG")
        rows.append((path.name, content_digest(path.read_bytes()), str(path)))
    write_list(tmp_path / "list.parquet", rows)
    encode_shard(
        tmp_path / "list.parquet",
        card,
        tmp_path / "out.parquet",
        IMAGES,
        device="cpu",
        batch_size=2,
        num_workers=1,
        max_pixels=LIMIT,
    )

    schema = pq.read_schema(tmp_path / "out.parquet")
    assert schema.field("embedding").type == pa.list_(pa.float32(), 128)
    shard = read_features(tmp_path / "out.parquet")
    assert shard.ids == [r[0] for r in rows] and shard.digests == [r[1] for r in rows]
    assert np.allclose(np.linalg.norm(shard.embeddings, axis=1), 1.0, atol=1e-5)
    assert shard.metadata["model_tag"].startswith("tuwen-tiny-") and shard.metadata["resolution"] == 64

    transform = image_transform(TINY.resolution)
    batch = torch.stack([transform(Image.open(r[2]).convert("RGB")) for r in rows])
    with torch.inference_mode():
        reference = model.encode_image(batch).numpy()
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    assert np.allclose(shard.embeddings, reference, atol=1e-5)


def test_text_shard_matches_cn_clip_tokenizer(tmp_path):
    model, card = make_card(tmp_path)
    captions = ["左上角有一个红色的圆形", "蓝色的星形", "十字" * 60]  # the last exceeds 52 tokens
    write_list(tmp_path / "list.parquet", [(f"Word-{i}", f"d{i}", c) for i, c in enumerate(captions)])
    encode_shard(tmp_path / "list.parquet", card, tmp_path / "out.parquet", TEXTS, device="cpu", batch_size=2)
    shard = read_features(tmp_path / "out.parquet")
    with torch.inference_mode():
        reference = model.encode_text(tokenize(captions)).numpy()
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    assert np.allclose(shard.embeddings, reference, atol=1e-5)


def test_unreadable_image_is_skipped_and_reported(tmp_path):
    _, card = make_card(tmp_path)
    (tmp_path / "gone.jpg").write_bytes(b"not an image")
    write_list(tmp_path / "list.parquet", [("gone.jpg", "x", str(tmp_path / "gone.jpg"))])
    encoded = encode_shard(
        tmp_path / "list.parquet",
        card,
        tmp_path / "out.parquet",
        IMAGES,
        device="cpu",
        batch_size=8,
        max_pixels=LIMIT,
    )
    assert encoded.ids == [] and encoded.skipped[0][0] == "gone.jpg"
    assert read_features(tmp_path / "out.parquet").embeddings.shape == (0, 128)


def _mixed_images(folder):
    """JPEGs of real-photo size plus every file the device decoder must leave to PIL."""
    import io
    import random

    rng = random.Random(5)
    folder.mkdir()
    rows = []

    def put(name, image, image_format, **options):
        buffer = io.BytesIO()
        image.save(buffer, format=image_format, **options)
        (folder / name).write_bytes(buffer.getvalue())
        rows.append((name, None, str(folder / name)))

    for i in range(6):
        put(
            f"photo-{i}.jpg",
            draw_scene(ALL_SCENES[i * 7], rng).resize((480 - 40 * i, 360)),
            "JPEG",
            quality=90,
        )
    put("png.jpg", draw_scene(ALL_SCENES[3], rng), "PNG")
    put("grey.jpg", draw_scene(ALL_SCENES[9], rng).convert("L"), "JPEG")
    rotated = Image.Image.getexif(Image.new("RGB", (1, 1)))
    rotated[0x0112] = 6
    put("exif.jpg", draw_scene(ALL_SCENES[11], rng).resize((300, 200)), "JPEG", exif=rotated)
    whole = (folder / "photo-0.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    rows.append(("truncated.jpg", None, str(folder / "truncated.jpg")))
    return pd.DataFrame(rows, columns=["id", "digest", "source"])


def test_only_complete_plain_jpegs_take_the_device_path(tmp_path):
    """nvJPEG (seen on an H200) decodes a JPEG cut short without an error where PIL refuses
    it: only a file that ends in its end-of-image marker may skip PIL's judgement."""
    from tuwen.clip.device_decoding import is_complete_plain_jpeg

    items = _mixed_images(tmp_path / "images").set_index("id")
    data = {name: Path(items.loc[name, "source"]).read_bytes() for name in items.index}
    takes = {name for name, raw in data.items() if is_complete_plain_jpeg(raw)}
    assert takes == {f"photo-{i}.jpg" for i in range(6)}
    assert not is_complete_plain_jpeg(data["photo-0.jpg"][:-1])
    assert not is_complete_plain_jpeg(data["photo-0.jpg"] + b"\x00" * 16)


@pytest.mark.parametrize("device", CPU_AND_CUDA)
def test_device_jpeg_path_gives_the_pil_path_embeddings(tmp_path, device):
    """The device path (decode, resize, normalise on tensors): same ids, same reasons,
    embeddings within cosine 0.999 of cn_clip's PIL transform on the same device."""
    from tuwen.clip.encode import encode_images

    items = _mixed_images(tmp_path / "images")
    model = build_model(TINY, seed=3).eval().to(device)
    pil = encode_images(model, items, TINY.resolution, device, 4, 0, None, progress=False)
    tensor = encode_images(
        model,
        items,
        TINY.resolution,
        device,
        4,
        0,
        None,
        progress=False,
        jpeg_decode_device=device,
    )
    assert (
        [s[:2] for s in tensor.skipped] == [("truncated.jpg", "undecodable")] == [s[:2] for s in pil.skipped]
    )
    assert "truncated.jpg" in tensor.skipped[0][2]
    assert sorted(tensor.ids) == sorted(pil.ids) and len(pil.ids) == 9
    pil_rows = dict(
        zip(pil.ids, pil.embeddings / np.linalg.norm(pil.embeddings, axis=1, keepdims=True), strict=True)
    )
    got = tensor.embeddings / np.linalg.norm(tensor.embeddings, axis=1, keepdims=True)
    cosines = {i: float(row @ pil_rows[i]) for i, row in zip(tensor.ids, got, strict=True)}
    assert min(cosines.values()) >= 0.999, cosines
    # The threshold means something only if this model tells different pictures apart.
    assert float(pil_rows["photo-0.jpg"] @ pil_rows["photo-1.jpg"]) < 0.999


def test_the_pil_path_gives_exactly_cn_clips_transform(tmp_path):
    """Pixels travel to the device as uint8 and are normalised there: the model input must
    still be bit for bit what cn_clip's own transform makes of each file, grey, PNG and
    EXIF-rotated ones included."""
    from tuwen.clip.encode import image_batches
    from tuwen.files.images import load_image

    items = _mixed_images(tmp_path / "images")
    batches = list(image_batches(items, TINY.resolution, "cpu", 4, 0, None))
    positions = [p for batch in batches for p in batch.positions]
    got = torch.cat([batch.pixels for batch in batches if batch.pixels is not None])
    transform = image_transform(TINY.resolution)
    expected = torch.stack([transform(load_image(items["source"][p], None)[0]) for p in positions])
    assert sorted(items["id"][p] for p in positions) == sorted(set(items["id"]) - {"truncated.jpg"})
    assert got.dtype == torch.float32 and torch.equal(got, expected)


def test_device_resize_matches_pil_pixels():
    """cn_clip's PIL transform and the tensor transform agree to within rounding on a real-size JPEG."""
    import io
    import random

    from torchvision.io import decode_jpeg

    from tuwen.clip.device_decoding import normalise, resize_pixels

    image = draw_scene(ALL_SCENES[5], random.Random(1)).resize((500, 375))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    data = buffer.getvalue()
    expected = image_transform(224)(Image.open(io.BytesIO(data)))
    got = normalise(resize_pixels([decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8))], 224))[
        0
    ]
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
    difference = ((got - expected) * std * 255).abs()  # in 8-bit pixel steps
    assert difference.mean() < 0.5 and difference.max() <= 3


def test_non_finite_embeddings_are_never_written(tmp_path):
    embeddings = np.ones((3, 4), dtype=np.float32)
    embeddings[1, 2] = np.nan
    embeddings[2, 0] = np.inf
    target = tmp_path / "shard.parquet"
    with pytest.raises(
        TuwenError, match=r"2 of 3 embeddings are not finite .* e\.g\. b, c; nothing was written"
    ):
        write_features(target, ["a", "b", "c"], embeddings, ["d1", "d2", "d3"], {})
    assert not target.exists()


def test_running_out_of_gpu_memory_names_the_setting_to_lower(tmp_path, monkeypatch):
    _, card = make_card(tmp_path)
    shard = tmp_path / "list.parquet"
    write_list(shard, [("Word-1", "d1", "一只猫")])

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr("tuwen.clip.encode.encode_texts", out_of_memory)
    with pytest.raises(TuwenError, match="out of GPU memory encoding .* at encode.batch_size 7: lower it"):
        encode_shard(shard, card, tmp_path / "out.parquet", TEXTS, device="cpu", batch_size=7)


@pytest.mark.parametrize("device", CPU_AND_CUDA)
def test_both_decode_paths_apply_the_pixel_limit_with_the_same_reason(tmp_path, device):
    """A JPEG over max_pixels is refused by the device path from its header, as PIL refuses it."""
    from tuwen.clip.encode import encode_images

    items = _mixed_images(tmp_path / "images")
    model = build_model(TINY, seed=3).eval().to(device)
    options = {"batch_size": 4, "num_workers": 0, "progress": False, "max_pixels": 400 * 360}
    pil = encode_images(model, items, TINY.resolution, device, **options)
    tensor = encode_images(model, items, TINY.resolution, device, jpeg_decode_device=device, **options)
    refused = sorted(s for s in pil.skipped if s[1] == "too_many_pixels")
    # photo-0 (480 x 360, and its truncated copy) and photo-1 (440 x 360) pass 144,000 pixels.
    assert [s[0] for s in refused] == ["photo-0.jpg", "photo-1.jpg", "truncated.jpg"]
    assert sorted(s for s in tensor.skipped if s[1] == "too_many_pixels") == refused
    assert sorted(tensor.ids) == sorted(pil.ids)


@pytest.mark.parametrize("device", CPU_AND_CUDA)
def test_a_resize_the_device_cannot_do_falls_back_to_pil(tmp_path, monkeypatch, device):
    """One image whose device resize fails (out of memory) is encoded through PIL; the shard goes on."""
    import tuwen.clip.device_decoding
    from tuwen.clip.encode import encode_images

    items = _mixed_images(tmp_path / "images").head(6)  # the plain JPEGs
    model = build_model(TINY, seed=3).eval().to(device)
    real = tuwen.clip.device_decoding.resize_pixels

    def fails_on_wide(images, resolution):
        if images[0].shape[-1] == 480:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(images, resolution)

    monkeypatch.setattr(tuwen.clip.device_decoding, "resize_pixels", fails_on_wide)
    options = {"batch_size": 6, "num_workers": 0, "max_pixels": None, "progress": False}
    tensor = encode_images(model, items, TINY.resolution, device, jpeg_decode_device=device, **options)
    pil = encode_images(model, items, TINY.resolution, device, **options)
    assert sorted(tensor.ids) == sorted(pil.ids) and tensor.skipped == []
    row = tensor.ids.index("photo-0.jpg")
    # fp16 on CUDA: the same input gives the same numbers only to fp16's precision there.
    tolerance = 1e-5 if device == "cpu" else 2e-3
    np.testing.assert_allclose(
        tensor.embeddings[row], pil.embeddings[pil.ids.index("photo-0.jpg")], atol=tolerance
    )


def test_one_model_tag_never_mixes_precisions(tmp_path):
    """A CPU (fp32) shard is refused beside an fp16 (CUDA) shard of the same tag, naming both."""
    model, card = make_card(tmp_path)
    tag = json.loads(card.read_text())["tag"]
    folder = tmp_path / "features" / tag
    # Neither a shard list nor another tag's fp16 shard in the folder counts.
    (folder / "lists").mkdir(parents=True)
    write_list(folder / "lists" / "list.parquet", [("Word-1", "d1", "一只猫")])
    write_features(
        folder / "another_tag" / "s.parquet", ["x"], np.ones((1, 4), np.float32), ["d"], {"precision": "fp16"}
    )
    encode_shard(
        folder / "lists" / "list.parquet",
        card,
        folder / "t2i_queries" / "s00000.parquet",
        TEXTS,
        device="cpu",
        batch_size=8,
    )
    first = pq.read_schema(folder / "t2i_queries" / "s00000.parquet").metadata[b"tuwen"]
    assert json.loads(first)["precision"] == "fp32"
    # A shard of the other kind may differ (an int8 model whose image tower stays fp32).
    images_made = folder / "i2t_images" / "s00000.parquet"
    int8_images = {"precision": "int8", "model_tag": tag, "kind": IMAGES}
    write_features(images_made, ["Image-1"], np.ones((1, 128), np.float32), ["d3"], int8_images)
    encode_shard(
        folder / "lists" / "list.parquet", card, folder / "t2i_queries" / "s00002.parquet", TEXTS,
        device="cpu", batch_size=8,
    )  # fmt: skip
    images_made.unlink()
    gpu_made = folder / "i2t_gallery" / "s00000.parquet"
    fp16 = {"precision": "fp16", "model_tag": tag, "kind": TEXTS}
    write_features(gpu_made, ["Word-2"], np.ones((1, 128), np.float32), ["d2"], fp16)
    for made in (folder / "t2i_queries").glob("*.parquet"):
        made.unlink()
    with pytest.raises(
        TuwenError, match=r"would be encoded in fp32, but .*i2t_gallery/s00000.parquet .* fp16"
    ):
        encode_shard(
            folder / "lists" / "list.parquet",
            card,
            folder / "t2i_queries" / "s00001.parquet",
            TEXTS,
            device="cpu",
            batch_size=8,
        )
