"""The one image loader: every kind of file gets an RGB image or a stable reason."""

import io

import numpy as np
import pytest
from PIL import Image

from tuwen.files.images import ImageRejected, load_image, probe_image


def save(image: Image.Image, path, image_format: str, **options) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    path.write_bytes(buffer.getvalue())


def red_square(mode: str = "RGB") -> Image.Image:
    return Image.new("RGB", (40, 30), (200, 20, 20)).convert(mode)


@pytest.mark.parametrize("image_format", ["PNG", "GIF", "WEBP", "BMP"])
def test_other_formats_under_a_jpg_name_are_decoded(tmp_path, image_format):
    path = tmp_path / "Image1-0001.jpg"
    save(red_square(), path, image_format)
    probe = probe_image(path, None)
    image, digest = load_image(path, None)
    assert probe.format == image_format and probe.digest == digest
    assert image.mode == "RGB" and image.size == (40, 30)


def test_transparent_pixels_are_shown_over_white(tmp_path):
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    path = tmp_path / "transparent.jpg"
    save(rgba, path, "PNG")
    image, _ = load_image(path, None)
    assert image.getpixel((5, 5)) == (255, 255, 255)


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    grey = Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16))
    path = tmp_path / "deep.png"
    save(grey, path, "PNG")
    image, _ = load_image(path, None)
    assert image.getpixel((0, 0)) == (128, 128, 128)


def test_exif_rotated_jpeg_is_upright(tmp_path):
    wide = Image.new("RGB", (60, 20), (0, 120, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = tmp_path / "rotated.jpg"
    save(wide, path, "JPEG", exif=exif.tobytes())
    image, _ = load_image(path, None)
    assert image.size == (20, 60)


@pytest.mark.parametrize(("image_format", "suffix"), [("HEIF", ".heic"), ("AVIF", ".avif")])
def test_phone_photos_heic_and_avif_are_listed_decoded_and_upright(tmp_path, image_format, suffix):
    from tuwen.files.folders import is_image_name

    # A wide picture, left half red, that EXIF says to show turned 90° clockwise.
    wide = np.zeros((20, 60, 3), np.uint8)
    wide[:, :30] = (220, 20, 20)
    exif = Image.Exif()
    exif[0x0112] = 6
    photo, jpeg = tmp_path / f"IMG_0001{suffix}", tmp_path / "IMG_0001.jpg"
    for path, kind in ((photo, image_format), (jpeg, "JPEG")):
        save(Image.fromarray(wide), path, kind, exif=exif.tobytes(), quality=95)
    assert is_image_name(photo.name)
    assert probe_image(photo, None).format == image_format
    image, _ = load_image(photo, None)
    upright, _ = load_image(jpeg, None)
    assert image.size == upright.size == (20, 60)
    # Turned clockwise, the red half is on top, as in the JPEG.
    top, bottom = np.asarray(image)[:25].mean(axis=(0, 1)), np.asarray(image)[35:].mean(axis=(0, 1))
    assert top[0] > 150 > bottom[0]
    assert np.abs(np.asarray(image, np.int16) - np.asarray(upright, np.int16)).mean() < 12


@pytest.mark.parametrize(
    ("content", "code"),
    [(b"", "empty_file"), (b"this is not an image\n", "not_an_image")],
)
def test_bad_bytes_are_rejected_with_a_reason(tmp_path, content, code):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageRejected) as error:
        probe_image(path, None)
    assert error.value.code == code and str(path) in error.value.message


def test_truncated_jpeg_is_rejected(tmp_path):
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    noise.save(buffer, format="JPEG", quality=95)
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageRejected) as error:
        probe_image(path, None)
    assert error.value.code == "undecodable"


def test_missing_file_is_rejected(tmp_path):
    with pytest.raises(ImageRejected) as error:
        probe_image(tmp_path / "absent.jpg", None)
    assert error.value.code == "missing_file"


def test_pixel_limit_rejects_with_the_limit_in_the_reason(tmp_path):
    path = tmp_path / "big.png"
    save(Image.new("RGB", (300, 200)), path, "PNG")
    with pytest.raises(ImageRejected) as error:
        probe_image(path, max_pixels=50_000)
    assert error.value.code == "too_many_pixels" and "50000" in error.value.message
    assert probe_image(path, max_pixels=60_000).width == 300


def test_when_a_photo_was_taken_comes_from_its_exif(tmp_path):
    from tuwen.files.images import exif_taken, probe_image

    def saved(name: str, **tags) -> Image.Image:
        exif = Image.Exif()
        for tag, value in tags.items():
            if tag == "original":
                exif.get_ifd(0x8769)[36867] = value  # DateTimeOriginal, in the Exif sub-IFD
            else:
                exif[306] = value  # DateTime, in IFD0
        Image.new("RGB", (8, 8)).save(tmp_path / name, exif=exif)
        return Image.open(tmp_path / name)

    assert exif_taken(saved("a.jpg", original="2021:06:15 10:00:00", changed="2022:01:01 00:00:00")) == (
        "2021-06-15T10:00:00"
    )
    assert exif_taken(saved("b.jpg", changed="2022:01:01 09:30:05")) == "2022-01-01T09:30:05"
    assert exif_taken(saved("c.jpg", original="0000:00:00 00:00:00")) is None  # cameras write this when unset
    assert exif_taken(saved("d.jpg", original="yesterday")) is None
    Image.new("RGB", (8, 8)).save(tmp_path / "e.png")
    assert probe_image(tmp_path / "e.png", None).taken is None
    assert probe_image(tmp_path / "a.jpg", None).taken == "2021-06-15T10:00:00"
