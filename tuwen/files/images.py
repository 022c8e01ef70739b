"""The one image loader: bytes on disk to an RGB PIL image, with a reason when it cannot be."""

from __future__ import annotations

import datetime
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from tuwen.files.containers import ContainerError, is_locator, read_member

# We enforce our own, configurable pixel limit (`ingest.max_image_pixels`, see `open_image`),
# so PIL's global warning/error threshold is switched off rather than raised per call.
Image.MAX_IMAGE_PIXELS = None
# Phones save HEIC: pillow-heif gives PIL its opener (AVIF is Pillow's own). It applies the
# EXIF orientation while decoding and resets the tag, so exif_transpose below is a no-op for
# it and every format ends upright the same way.
pillow_heif.register_heif_opener()


class ImageRejected(Exception):
    """An image that cannot be used, with a stable `code` and a sentence for people."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ImageProbe:
    """What ingest records about one readable, decodable image file."""

    digest: str
    num_bytes: int
    width: int
    height: int
    format: str
    taken: str | None = None  # EXIF DateTimeOriginal (else DateTime), ISO 8601; None without one


# EXIF: the Exif sub-IFD, its DateTimeOriginal, and IFD0's DateTime (the last change).
EXIF_IFD, DATE_TIME_ORIGINAL, DATE_TIME = 0x8769, 36867, 306


def exif_taken(image: Image.Image) -> str | None:
    """Give when a photo was taken by its EXIF (`2024:05:01 12:30:00` as `2024-05-01T12:30:00`);
    None where it has no such date or a malformed one."""
    try:
        exif = image.getexif()
        found = exif.get_ifd(EXIF_IFD).get(DATE_TIME_ORIGINAL) or exif.get(DATE_TIME)
    except Exception:  # noqa: BLE001 - a broken EXIF block is no date, never a reject
        return None
    text = str(found or "").strip().rstrip("\x00")
    if len(text) < 19 or text[4] != ":" or text[7] != ":":
        return None
    stamp = f"{text[:4]}-{text[5:7]}-{text[8:10]}T{text[11:19]}"
    try:
        return datetime.datetime.fromisoformat(stamp).isoformat()
    except ValueError:
        return None


def content_digest(data: bytes) -> str:
    """Give the sha256 hex digest of `data`: the identity of an image's content."""
    return hashlib.sha256(data).hexdigest()


def read_image_bytes(path: str | os.PathLike) -> bytes:
    """Read an image's bytes, from its file or in place from its container (a locator,
    tuwen.files.containers), turning OS errors into `ImageRejected` with a reason."""
    if is_locator(path):
        try:
            data = read_member(os.fspath(path))
        except ContainerError as error:
            raise ImageRejected("unreadable", str(error)) from None
        except OSError as error:
            raise ImageRejected("unreadable", f"{path}: cannot be read ({error})") from None
        if not data:
            raise ImageRejected("empty_file", f"{path}: the image is empty (0 bytes)")
        return data
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageRejected("missing_file", f"{path}: file does not exist") from None
    except PermissionError:
        raise ImageRejected("unreadable", f"{path}: permission denied when reading") from None
    except IsADirectoryError:
        raise ImageRejected("not_a_file", f"{path}: is a directory, not an image file") from None
    except OSError as error:
        raise ImageRejected("unreadable", f"{path}: cannot be read ({error})") from None
    if not data:
        raise ImageRejected("empty_file", f"{path}: file is empty (0 bytes)")
    return data


def open_image(data: bytes, source: str, max_pixels: int | None) -> Image.Image:
    """Open image bytes lazily (header only), rejecting non-images and decompression bombs
    (more than `max_pixels` pixels; None: an image ingest accepted under the run's limit)."""
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageRejected("not_an_image", f"{source}: not a recognised image format") from None
    except Exception as error:  # noqa: BLE001 - PIL raises many types for bad headers
        raise ImageRejected("undecodable", f"{source}: cannot read image header ({error})") from None
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageRejected(
            "too_many_pixels",
            f"{source}: {width}x{height} = {width * height} pixels exceeds the limit of "
            f"{max_pixels} (decompression-bomb guard; raise ingest.max_image_pixels to allow it)",
        )
    return image


def decode_image(
    data: bytes,
    source: str,
    max_pixels: int | None,
    draft_size: int | None = None,
) -> Image.Image:
    """Decode image bytes to an upright RGB image, as a viewer shows it.

    `draft_size` lets the JPEG decoder downscale by a power of two while keeping at
    least that many pixels per side: near-lossless after the model's resize, ~1.4x faster.
    Animated images give their first frame; transparency is composited onto white.
    """
    return _decode(open_image(data, source, max_pixels), source, draft_size)


def _decode(image: Image.Image, source: str, draft_size: int | None) -> Image.Image:
    try:
        if draft_size and image.format == "JPEG":
            image.draft("RGB", (draft_size, draft_size))
        image.seek(0)
        image.load()
        image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except Exception as error:  # noqa: BLE001 - truncated/corrupt data surfaces as several types
        raise ImageRejected("undecodable", f"{source}: image data cannot be decoded ({error})") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB the way a viewer shows it (alpha over white)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit grey: scale to 8 bits instead of letting PIL clip everything above 255.
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") else max(float(array.max()), 1.0)
        grey = np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def probe_image(path: str | os.PathLike, max_pixels: int | None, verify_decode: bool = True) -> ImageProbe:
    """Check that an image file reads (and with `verify_decode` decodes); give its digest, size, format.

    Without `verify_decode` only the header is read: truncated or corrupt pixel data is then
    found by the one decode that encoding does anyway, which records it as a reject.
    Raises `ImageRejected` naming the file and the reason when it cannot be used.
    """
    return probe_image_data(read_image_bytes(path), str(path), max_pixels, verify_decode)


def probe_image_data(
    data: bytes, source: str, max_pixels: int | None, verify_decode: bool = True
) -> ImageProbe:
    """`probe_image` of bytes already read (an image inside a container)."""
    image = open_image(data, source, max_pixels)
    width, height, image_format = image.width, image.height, image.format or "unknown"
    if verify_decode:
        # Decoding at reduced scale still meets truncation and corruption, at a fraction of the cost.
        _decode(image, source, draft_size=64)
    return ImageProbe(
        digest=content_digest(data),
        num_bytes=len(data),
        width=width,
        height=height,
        format=image_format,
        taken=exif_taken(image),
    )


def load_image(
    path: str | os.PathLike,
    max_pixels: int | None,
    draft_size: int | None = None,
) -> tuple[Image.Image, str]:
    """Give the upright RGB image at `path` and the digest of its bytes."""
    data = read_image_bytes(path)
    return decode_image(data, str(path), max_pixels, draft_size), content_digest(data)
