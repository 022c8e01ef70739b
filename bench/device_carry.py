"""Pack what `make check-gpu` needs on a lent GPU machine that has its own Python and no registry.

Such a machine (this workplace's `device` tool) brings Python 3.12 with torch, torchvision,
pandas, pyarrow, onnxruntime and opencv, but not Snakemake, cn_clip or the OCR engine, and
takes at most 64 MiB of files with the working tree. This writes into `.device/` (ignored):

- `wheels/`: the lock's versions of the packages check-gpu imports that the machine lacks,
  built for CPython 3.12 on x86-64 and installed there with `pip install --no-deps --target`.
  PuLP (16 MB of solver binaries, only for Snakemake's ILP scheduler; check-gpu runs with
  `--scheduler greedy`) and the CJK font (only for figures, which check-gpu does not ask
  for) are left out.
- `site/noto_cjk_sans_otc/`: the project's CJK font package (for the training curves the
  fine-tuning job draws) with its collection cut down by fontTools to the Simplified Chinese
  face and the characters of the figures' code, the OCR tests' rendered text and the
  sample's captions (20 MB otherwise).
- `sample.tar`: the real sample with its images shrunk, because the whole of it is 75 MB:
  附件1's (trained on, and OCR-read in the validation split) to at most `--train-side`
  pixels a side, the query and gallery images of 附件2 and 附件3 to `--gallery-side` (still
  larger than the model's input, so both decode paths still resize). Each keeps its format
  (the sample's PNG named .jpg stays a PNG; its GIFs are kept as they are) and its name. A
  tar, because the names are Chinese and the tool's transfer is only promised for plain ones.

Usage: python -m bench.device_carry [--sample DIR] [--out .device] [--train-side 224]
                                    [--gallery-side 1280]
"""

from __future__ import annotations

import argparse
import io
import re
import shutil
import subprocess
import sys
import tarfile
from importlib import resources
from pathlib import Path

from fontTools import subset
from fontTools.ttLib import TTCollection
from PIL import Image

from bench.check_gpu import DEFAULT_SAMPLE, REPO

# What check-gpu imports (Snakemake, cn_clip, the OCR engine) and the device's image lacks.
DEVICE_MISSING = [
    "snakemake",
    "conda-inject",
    "ConfigArgParse",
    "connection_pool",
    "docutils",
    "dpath",
    "GitPython",
    "gitdb",
    "smmap",
    "humanfriendly",
    "immutables",
    "jsonschema",
    "jsonschema-specifications",
    "referencing",
    "rpds-py",
    "nbformat",
    "fastjsonschema",
    "jupyter_core",
    "traitlets",
    "platformdirs",
    "smart_open",
    "snakemake-interface-common",
    "snakemake-interface-executor-plugins",
    "snakemake-interface-logger-plugins",
    "snakemake-interface-report-plugins",
    "snakemake-interface-scheduler-plugins",
    "snakemake-interface-storage-plugins",
    "sqlmodel",
    "SQLAlchemy",
    "greenlet",
    "pydantic",
    "pydantic_core",
    "annotated-types",
    "typing-inspection",
    "tenacity",
    "throttler",
    "yte",
    "argparse-dataclass",
    "cn_clip",
    "rapidocr-onnxruntime",
    "pyclipper",
    "shapely",
    "onnx2torch",
]
PLATFORMS = [
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_28_x86_64",
    "manylinux_2_31_x86_64",
    "manylinux_2_34_x86_64",
]
LIMIT_BYTES = 64 * 1024 * 1024


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(lock: Path) -> dict[str, str]:
    pins = {}
    for line in lock.read_text().splitlines():
        found = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)", line)
        if found:
            pins[normalise(found.group(1))] = found.group(2)
    return pins


def download_wheels(names: list[str], pins: dict[str, str], into: Path) -> None:
    """Fetch each pinned wheel for CPython 3.12; build a wheel where PyPI has only an sdist."""
    into.mkdir(parents=True, exist_ok=True)
    for name in names:
        requirement = f"{name}=={pins[normalise(name)]}"
        platform_flags = [flag for platform in PLATFORMS for flag in ("--platform", platform)]
        binary = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
            + ["--python-version", "3.12", "--implementation", "cp", *platform_flags]
            + ["-d", str(into), requirement],
            capture_output=True,
            text=True,
        )
        if binary.returncode == 0:
            continue
        built = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(into), requirement],
            capture_output=True,
            text=True,
        )
        if built.returncode != 0:
            raise SystemExit(f"device_carry: no wheel for {requirement}:\n{built.stderr[-2000:]}")
        pure = [wheel for wheel in into.glob("*.whl") if "-none-any" in wheel.name]
        if not any(normalise(wheel.name.split("-")[0]) == normalise(name) for wheel in pure):
            raise SystemExit(f"device_carry: {requirement} has no wheel for CPython 3.12 on x86-64")


def shrunk_image(path: Path, side: int) -> bytes | None:
    """Give the image at `path` at most `side` pixels a side, in its own format (a JPEG stays a
    JPEG, a PNG named .jpg stays a PNG), or None to keep the file as it is."""
    with Image.open(path) as image:
        if image.format not in ("JPEG", "PNG") or max(image.size) <= side:
            return None
        kind = image.format
        image.thumbnail((side, side))
        buffer = io.BytesIO()
        image.save(buffer, format=kind, **({"quality": 88} if kind == "JPEG" else {}))
    return buffer.getvalue()


def pack_sample(sample: Path, tar_path: Path, train_side: int, gallery_side: int) -> None:
    with tarfile.open(tar_path, "w") as tar:
        for path in sorted(sample.rglob("*")):
            if not path.is_file():
                continue
            name = f"sample/{path.relative_to(sample).as_posix()}"
            folder = path.relative_to(sample).parts[:2]
            data = None
            if folder == ("附件1", "ImageData"):
                data = shrunk_image(path, train_side)
            elif folder[1:] == ("ImageData",):
                data = shrunk_image(path, gallery_side)
            if data is None:
                tar.add(path, arcname=name)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mtime = int(path.stat().st_mtime)
                tar.addfile(info, io.BytesIO(data))


def pack_font(sample: Path, into: Path) -> None:
    """Write the CJK font package with its collection cut down to the characters used here."""
    from tuwen.report.figures import CJK_FAMILY

    package = resources.files("noto_cjk_sans_otc")
    collection = TTCollection(str(package / "NotoSansCJK-Regular.ttc"))
    face = [font["name"].getDebugName(1) for font in collection.fonts].index(CJK_FAMILY)
    characters = set()
    for source in ("tuwen/report/figures.py", "tests/test_ocr.py"):  # the figures, the text OCR tests render
        characters |= set((REPO / source).read_text(encoding="utf-8"))
    for table in sample.rglob("*.csv"):
        characters |= set(table.read_text(encoding="utf-8"))
    characters |= {chr(code) for code in range(0x20, 0x7F)}
    options = subset.Options(font_number=face)
    font = subset.load_font(str(package / "NotoSansCJK-Regular.ttc"), options)
    subsetter = subset.Subsetter(options)
    subsetter.populate(text="".join(sorted(characters)))
    subsetter.subset(font)
    into.mkdir(parents=True)
    (into / "__init__.py").write_bytes((package / "__init__.py").read_bytes())
    cut = TTCollection()
    cut.fonts = [font]
    cut.save(str(into / "NotoSansCJK-Regular.ttc"))


def tree_bytes() -> int:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    files = [REPO / name.decode() for name in listed if name]
    return sum(path.stat().st_size for path in files if path.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE)
    parser.add_argument("--out", type=Path, default=REPO / ".device")
    parser.add_argument("--train-side", type=int, default=224)
    parser.add_argument("--gallery-side", type=int, default=1280)
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    download_wheels(DEVICE_MISSING, locked_versions(REPO / "requirements.lock"), args.out / "wheels")
    pack_font(args.sample, args.out / "site" / "noto_cjk_sans_otc")
    pack_sample(args.sample, args.out / "sample.tar", args.train_side, args.gallery_side)
    carried = sum(path.stat().st_size for path in args.out.rglob("*") if path.is_file())
    total = carried + tree_bytes()
    print(f"{args.out}: {carried / 2**20:.1f} MiB carried, {total / 2**20:.1f} MiB with the working tree")
    if total > LIMIT_BYTES:
        print("device_carry: over the tool's 64 MiB; lower --train-side or --gallery-side", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
