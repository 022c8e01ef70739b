"""CN-CLIP models through cn_clip's own classes: by name, from a checkpoint, or small and seeded.

Three ways in, one loader out (`load_model`):
- a cn_clip name (ViT-B-16, ViT-L-14, ViT-L-14-336, ViT-H-14, RN50) whose weights cn_clip
  fetches into a cache folder (`fetch_pretrained`), or that a user placed there by hand;
- a local checkpoint in cn_clip's format (`{"state_dict": ...}`) for any known architecture;
- a small architecture of this project (`tuwen-tiny`), random-initialised with a fixed seed
  (`build_model`), for the offline demo and the tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import socket
from importlib import resources
from pathlib import Path

import cn_clip.clip as cn_clip
import torch
from cn_clip.clip.model import CLIP, convert_weights

from tuwen.clip.architectures import RELEASED_MODELS, Architecture, ModelError, architecture
from tuwen.files.atomic import atomic_path


def _config_file(part: str):
    """The JSON config of one tower: ours for the small architectures, cn_clip's shipped one otherwise."""
    ours = resources.files("tuwen.clip.model_configs") / f"{part}.json"
    if ours.is_file():
        return ours
    return resources.files("cn_clip.clip") / "model_configs" / f"{part}.json"


def model_config(arch: Architecture) -> dict:
    """Give the keyword arguments of cn_clip's `CLIP` class for `arch`.

    The same merge of a vision and a text config as cn_clip's `create_model`, which reads
    only its own package folder; ours are read from tuwen, never written into cn_clip.
    """
    config: dict = {}
    for part in (arch.vision, arch.text):
        config.update(json.loads(_config_file(part).read_text(encoding="utf-8")))
    if isinstance(config["vision_layers"], str):  # cn_clip writes ResNet depths as "[3, 4, 6, 3]"
        config["vision_layers"] = json.loads(config["vision_layers"])
    return config


def build_model(arch: Architecture, seed: int) -> CLIP:
    """Give a random-initialised float32 CN-CLIP model of `arch`; the same seed gives the same weights."""
    torch.manual_seed(seed)
    return _create_model(arch, None).float()


def save_checkpoint(model: CLIP, path: str | os.PathLike, arch: Architecture, **extra) -> None:
    """Save `model` in cn_clip's checkpoint format (`state_dict` plus bookkeeping), atomically."""
    state = {k: v.detach().to("cpu", torch.float32) for k, v in model.state_dict().items()}
    checkpoint = {
        "name": arch.name,
        "struct": arch.struct,
        "resolution": arch.resolution,
        "epoch": extra.pop("epoch", 0),
        "step": extra.pop("step", 0),
        "state_dict": state,
        **extra,
    }
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def load_model(arch: Architecture, checkpoint_path: str | os.PathLike, device: str = "cpu") -> CLIP:
    """Give the model of `arch` with the weights of a cn_clip checkpoint, float32, in eval mode.

    A checkpoint of another architecture gets a short error naming both, not a shape dump.
    """
    path = Path(checkpoint_path)
    checkpoint = _read_checkpoint(path)
    _check_fits(arch, checkpoint["state_dict"], path)
    model = _create_model(arch, checkpoint).float()
    return model.to(device).eval()


def _read_checkpoint(path: Path) -> dict:
    if not path.is_file():
        raise ModelError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu")
    except Exception as error:  # noqa: BLE001 - torch raises several types for bad files
        raise ModelError(f"{path}: not a readable PyTorch checkpoint ({error})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ModelError(f"{path}: not a cn_clip checkpoint (no 'state_dict' entry)")
    return checkpoint


def _create_model(arch: Architecture, checkpoint: dict | None) -> CLIP:
    """Build `arch` as cn_clip's `create_model` does, weights rounded through fp16 included.

    cn_clip converts the model to fp16 before loading weights; keeping that step makes a
    model loaded here equal, bit for bit, to the same checkpoint loaded by cn_clip.
    """
    model = CLIP(**model_config(arch))
    convert_weights(model)
    if checkpoint is not None:
        weights = checkpoint["state_dict"]
        model.load_state_dict(
            {k.removeprefix("module."): v for k, v in weights.items() if "bert.pooler" not in k}
        )
    return model


def _check_fits(arch: Architecture, state_dict: dict, path: Path) -> None:
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in CLIP(**model_config(arch)).state_dict().items()}
    given = {
        k.removeprefix("module."): tuple(v.shape) for k, v in state_dict.items() if "bert.pooler" not in k
    }
    missing = sorted(set(expected) - set(given))
    wrong = sorted(k for k in set(expected) & set(given) if expected[k] != given[k])
    if not missing and not wrong:
        return
    if wrong:
        name = wrong[0]
        example = f"{name} is {list(given[name])} in the checkpoint but {list(expected[name])} in {arch.name}"
    else:
        example = f"{missing[0]} is missing"
    raise ModelError(
        f"{path} does not fit architecture {arch.name} ({arch.struct}): {len(wrong)} tensors of "
        f"another shape, {len(missing)} missing; e.g. {example}. Set `model` to the architecture "
        "the checkpoint was trained with."
    )


def pretrained_weights_path(name: str, weights_dir: str | os.PathLike) -> Path:
    """Give where cn_clip keeps (or expects by hand) the released weights of model `name`."""
    architecture(name)  # clear error for unknown names
    if name not in RELEASED_MODELS:
        raise ModelError(f"'{name}' is a small test architecture; it has no released weights")
    return Path(os.path.expanduser(weights_dir)) / RELEASED_MODELS[name].file


def fetch_pretrained(name: str, weights_dir: str | os.PathLike) -> Path:
    """Make sure the released weights of `name` are in `weights_dir`, downloading them through cn_clip.

    cn_clip's public way to fetch a model is `load_from_name(name, download_root=...)`,
    which downloads into `download_root` and then loads the model once (discarded here).
    """
    target = pretrained_weights_path(name, weights_dir)
    if target.is_file():
        return target
    repo = RELEASED_MODELS[name].repo
    try:
        # Without this look-up the hub client retries for ~25 s before saying it is offline.
        socket.getaddrinfo("huggingface.co", 443)
        with contextlib.redirect_stdout(io.StringIO()):
            cn_clip.load_from_name(name, device="cpu", download_root=str(target.parent))
    except Exception as error:  # noqa: BLE001 - offline shows up as many exception types
        shutil.rmtree(target.parent / ".cache", ignore_errors=True)
        raise ModelError(
            f"pretrained weights for {name} are not at {target} and cannot be downloaded "
            f"({type(error).__name__}). Offline: on a machine with network, download "
            f"{target.name} from the Hugging Face repository OFA-Sys/{repo} (or ModelScope "
            f"AI-ModelScope/{repo}) and place it at {target}; or set weights_dir to where it is."
        ) from None
    if not target.is_file():
        raise ModelError(f"cn_clip reported a download of {name}, but {target} is not there")
    return target


def weights_digest(state_dict: dict) -> str:
    """Give the sha256 of a state dict's tensors (names, dtypes, shapes, values).

    File bytes cannot serve: torch.save writes a random serialization id into every
    file, so two saves of the same weights differ. `module.` prefixes are ignored.
    """
    digest = hashlib.sha256()
    canonical = {k.removeprefix("module."): v for k, v in state_dict.items() if "bert.pooler" not in k}
    for key in sorted(canonical):
        tensor = canonical[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def checkpoint_digest(path: str | os.PathLike, arch: Architecture | None = None) -> str:
    """Give the weights digest of a cn_clip checkpoint file, first checking it fits `arch` if given."""
    checkpoint = _read_checkpoint(Path(path))
    if arch is not None:
        _check_fits(arch, checkpoint["state_dict"], Path(path))
    return weights_digest(checkpoint["state_dict"])
