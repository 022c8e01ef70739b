"""JPEG bytes to model input on the device: batched decode (nvjpeg on CUDA), resize, normalise.

The same steps as cn_clip's `image_transform` on a PIL image (bicubic resize to a square
with PIL-style antialiasing, 8-bit rounding, CLIP's mean and std), done on tensors so that
a GPU decodes and resizes while the CPU only reads files. Only complete plain JPEGs take this
path (`is_complete_plain_jpeg`); every other file is decoded by PIL, the one image loader, so
both paths accept and refuse the same files.
"""

from __future__ import annotations

import functools
import io
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from PIL import Image

from tuwen.files.images import ImageRejected

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
EXIF_ORIENTATION = 0x0112


def is_complete_plain_jpeg(data: bytes) -> bool:
    """Tell whether bytes are a colour JPEG that needs no EXIF rotation (from its header) and
    ends in its end-of-image marker. On an H200, nvJPEG decoded a JPEG cut in half without an
    error where PIL refuses it, so a file cut short, or one with bytes after its end, is left
    to PIL to judge."""
    if not data.startswith(b"\xff\xd8\xff") or not data.endswith(b"\xff\xd9"):
        return False
    try:
        image = Image.open(io.BytesIO(data))
        return (
            image.format == "JPEG" and image.mode == "RGB" and image.getexif().get(EXIF_ORIENTATION, 1) == 1
        )
    except Exception:  # noqa: BLE001 - any header problem: let PIL's path give the reason
        return False


def resize_pixels(images: list[torch.Tensor], resolution: int) -> torch.Tensor:
    """Give uint8 [N, 3, res, res] pixels from uint8 CHW RGB tensors, on their device, resized
    as cn_clip's PIL transform resizes (bicubic to a square, PIL-style antialiasing, rounded
    to 8-bit pixels)."""
    resized = [
        F.interpolate(
            image.unsqueeze(0).float(),
            size=(resolution, resolution),
            mode="bicubic",
            antialias=True,
            align_corners=False,
        )
        for image in images
    ]
    return torch.cat(resized).clamp_(0, 255).round_().to(torch.uint8)


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """Give the model input of uint8 [N, 3, H, W] pixels, on their device: the operations of
    torchvision's ToTensor and Normalize in cn_clip's transform, in their order and in
    float32, so that the numbers are those of the transform whichever device computes them.
    Pixels travel to the device as uint8, a quarter of the bytes of the float input."""
    mean, std = _mean_and_std(pixels.device)
    return pixels.float().div_(255).sub_(mean).div_(std)


@functools.cache
def _mean_and_std(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # Made once per device: a copy from pageable host memory to a GPU waits for the stream,
    # so making them per batch would make every batch wait for the previous forward pass.
    def constant(values):
        return torch.tensor(values, device=device).view(1, 3, 1, 1)

    return constant(CLIP_MEAN), constant(CLIP_STD)


def decode_jpegs(
    jpegs: list[torch.Tensor],
    sources: list[str],
    device: str,
    resolution: int,
    fallback: Callable[[bytes, str], torch.Tensor],
) -> tuple[torch.Tensor | None, list[int], list[tuple[int, str, str]]]:
    """Decode JPEG byte tensors on `device` in one batch and give their resized uint8 pixels.

    A batch the decoder refuses is retried one file at a time, and a file it refuses
    goes through `fallback(bytes, source)` (PIL, giving resized uint8 pixels). Gives the
    pixels, the positions they hold (in order),
    and (position, reason code, sentence) for files no decoder could read.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    def decode(batch: list[torch.Tensor]) -> list[torch.Tensor]:
        if device != "cpu":
            # nvJPEG's hardware decoder writes its output before work already queued on the
            # stream has run, so memory the caching allocator hands it may still be read by
            # queued kernels (the previous batch's forward pass: encode_images never waits):
            # wrong numbers or NaNs elsewhere (pytorch/vision#9606; TorchCodec's fix,
            # meta-pytorch/torchcodec#1634, is this same synchronisation).
            torch.cuda.current_stream(device).synchronize()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision 0.29 announces the move to TorchCodec
            return decode_jpeg(batch, mode=ImageReadMode.RGB, device=device)

    try:
        decoded: list[torch.Tensor | None] = list(decode(jpegs))
    except RuntimeError:
        decoded = [None] * len(jpegs)
    pixels, positions, failures = [], [], []
    direct = []
    for position, (raw, image) in enumerate(zip(jpegs, decoded, strict=True)):
        if image is None:
            try:
                image = decode([raw])[0]
            except RuntimeError:
                image = None
        if image is not None:
            direct.append(image)
            positions.append(position)
            continue
        try:
            pixels.append((position, fallback(raw.numpy().tobytes(), sources[position]).to(device)))
        except ImageRejected as rejected:
            failures.append((position, rejected.code, rejected.message))
    parts, kept = [], []
    for position, image in zip(positions, direct, strict=True):
        # One image at a time: a resize the device cannot do (out of memory on a huge
        # panorama) sends that file to PIL instead of ending the shard.
        try:
            parts.append(resize_pixels([image], resolution))
            kept.append(position)
        except RuntimeError:
            try:
                pixels.append(
                    (position, fallback(jpegs[position].numpy().tobytes(), sources[position]).to(device))
                )
            except ImageRejected as rejected:
                failures.append((position, rejected.code, rejected.message))
    positions = kept
    parts += [tensor.unsqueeze(0) for _, tensor in pixels]
    positions += [position for position, _ in pixels]
    return (torch.cat(parts) if parts else None), positions, failures
