"""JPEG bytes to model input on the device: batched decode (nvjpeg on CUDA), resize, normalise.

The same steps as cn_clip's `image_transform` on a PIL image (bicubic resize to a square
with PIL-style antialiasing, 8-bit rounding, CLIP's mean and std), done on tensors so that
a GPU decodes and resizes while the CPU only reads files. Only complete plain JPEGs take this
path (`is_complete_plain_jpeg`); every other file is decoded by PIL, the one image loader, so
both paths accept and refuse the same files.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from PIL import Image

from tuwen.images import ImageRejected

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


def resize_normalise(images: list[torch.Tensor], resolution: int) -> torch.Tensor:
    """Give cn_clip's model input from uint8 CHW RGB tensors, on their device: [N, 3, res, res]."""
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
    # PIL resizes to 8-bit pixels: round and clip the same way before scaling to [0, 1].
    batch = torch.cat(resized).clamp_(0, 255).round_().div_(255)
    mean = torch.tensor(CLIP_MEAN, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=batch.device).view(1, 3, 1, 1)
    return (batch - mean) / std


def decode_jpegs(
    jpegs: list[torch.Tensor],
    sources: list[str],
    device: str,
    resolution: int,
    fallback: Callable[[bytes, str], torch.Tensor],
) -> tuple[torch.Tensor | None, list[int], list[tuple[int, str, str]]]:
    """Decode JPEG byte tensors on `device` in one batch and give the model input.

    A batch the decoder refuses is retried one file at a time, and a file it refuses
    goes through `fallback(bytes, source)` (PIL). Gives the input, the positions it holds (in order),
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
            parts.append(resize_normalise([image], resolution))
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
