"""Images kept inside container files, read in place: the field's dataset formats.

- CN-CLIP's `{split}_imgs.tsv`: one image a line, `image_id<TAB>base64 of the file`, no header.
- webdataset tar shards as img2dataset writes them: the members of one sample share a key
  (`000000123.jpg`, `000000123.txt`, `000000123.json`), the key being the member's name up
  to the first dot of its base name.
- Hugging Face datasets parquet: an image column of structs `{bytes, path}`.
- CN-CLIP's LMDB of images (`lmdb/{split}/imgs`, written by its build_lmdb_dataset.py):
  key the image id, value the base64 of the file.

An image inside a container is named everywhere by a locator, `<container file>::<member>`,
which stands where a folder's image has its path (the manifest's `path` column), so every
reader of image bytes (`tuwen.files.images.read_image_bytes`) reads it in place: no image
is unpacked to disk. The member part says where the bytes are: a line's byte offset in a
TSV, `<offset>+<size>` of a tar member's data, `<row group>/<row>/<column>` in a parquet,
the key in an LMDB.
"""

from __future__ import annotations

import base64
import binascii
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

SEPARATOR = "::"
FOLDER, CN_CLIP, WEBDATASET, PARQUET, LMDB = "folder", "cn_clip", "webdataset", "parquet", "lmdb"
IMAGE_FORMATS = (FOLDER, CN_CLIP, WEBDATASET, PARQUET, LMDB)
# The file endings of each container format, for a folder of containers and for detection;
# an LMDB is a folder holding data.mdb.
CONTAINER_SUFFIXES = {CN_CLIP: (".tsv",), WEBDATASET: (".tar",), PARQUET: (".parquet",), LMDB: ("data.mdb",)}
LMDB_DATA = "data.mdb"
LMDB_COUNT_KEY = b"num_images"
# A webdataset sample's image member: the endings img2dataset and webdataset write.
TAR_IMAGE_ENDINGS = (
    "jpg",
    "jpeg",
    "png",
    "webp",
    "gif",
    "bmp",
    "tif",
    "tiff",
    "heic",
    "avif",
    "img",
    "image",
)


class ContainerError(Exception):
    """A container that cannot be read, or a member that is not where its locator says."""


def locator(container: str | os.PathLike, member: str) -> str:
    """Give the name of an image inside a container file."""
    return f"{os.fspath(container)}{SEPARATOR}{member}"


def is_locator(path: str | os.PathLike) -> bool:
    return SEPARATOR in os.fspath(path)


def container_format(path: str | os.PathLike) -> str:
    """Give the container format of a file by its name's ending, or of an LMDB folder ("" for none)."""
    if is_lmdb(path):
        return LMDB
    suffix = Path(path).suffix.lower()
    return next((name for name, endings in CONTAINER_SUFFIXES.items() if suffix in endings), "")


def is_lmdb(path: str | os.PathLike) -> bool:
    return Path(path).is_dir() and (Path(path) / LMDB_DATA).is_file()


def detect_image_format(source: str | os.PathLike) -> str:
    """Give how an image collection's source is read: a container file by its ending; a folder
    holding containers and no image file as those containers; any other folder as a folder."""
    from tuwen.files.folders import has_image_file

    path = Path(source)
    if path.is_file() or not path.exists() or is_lmdb(path):
        return container_format(path) or FOLDER
    if path.is_dir() and not has_image_file(path):
        found = {container_format(entry) for entry in path.iterdir() if entry.is_file()} - {""}
        if len(found) == 1:
            return found.pop()
    return FOLDER


def container_files(source: str | os.PathLike, image_format: str) -> list[Path]:
    """Give the container files of a collection's source: the file itself, or a folder's
    files of that format (not its sub-folders), in name order."""
    path = Path(source)
    if path.is_file() or image_format == LMDB:
        return [path] if path.exists() else []
    endings = CONTAINER_SUFFIXES[image_format]
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in endings)


def source_stamp(source: str | os.PathLike, image_format: str) -> str:
    """Give what changes when a container is added, removed or rewritten: each container
    file's name, size and modification time."""
    parts = []
    for path in container_files(source, image_format):
        stat = (path / LMDB_DATA if image_format == LMDB else path).stat()
        parts.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return ";".join(parts)


# ---- listing the members -------------------------------------------------------------


@dataclass
class Member:
    """One record of a container: its id, where its image bytes are ("" = none), and a
    problem that makes it unusable ("" = none)."""

    item_id: str
    member: str
    row: int  # the record's 1-based number in its container (a TSV line, a tar sample, a parquet row)
    problem: str = ""
    texts: dict[str, str] = field(default_factory=dict)  # a tar sample's .txt/.json members


def image_members(
    path: Path, image_format: str, image_column: str, id_column: str
) -> Iterator[tuple[Member, bytes | None]]:
    """List a container's records with their image bytes (None where a record has none)."""
    if image_format == CN_CLIP:
        yield from tsv_members(path)
    elif image_format == WEBDATASET:
        samples = list(tar_samples(path))
        with open(path, "rb") as handle:
            for sample in samples:
                data = None
                if sample.member:
                    offset, _, size = sample.member.partition("+")
                    handle.seek(int(offset))
                    data = handle.read(int(size))
                yield sample, data
    elif image_format == PARQUET:
        yield from parquet_members(path, image_column, id_column)
    elif image_format == LMDB:
        yield from lmdb_members(path)
    else:
        raise ContainerError(f"{path}: {image_format!r} is not a container format")


def tsv_members(path: Path) -> Iterator[tuple[Member, bytes | None]]:
    """List CN-CLIP's `image_id<TAB>base64` lines with their decoded bytes; a line without a
    tab, or whose base64 does not decode, is a problem."""
    offset = 0
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            start, offset = offset, offset + len(line)
            if not line.strip():
                continue
            head, tab, encoded = line.partition(b"\t")
            member = Member(head.decode("utf-8", "replace").strip(), str(start), number)
            data = None
            if not tab:
                member.problem = "no tab between the image id and its base64"
            else:
                try:
                    data = decode_base64(encoded)
                except binascii.Error as error:
                    member.problem = f"the image is not valid base64 ({error})"
            yield member, data


def tar_samples(path: Path) -> Iterator[Member]:
    """List a webdataset shard's samples in member order: each key's image member (the first
    of TAR_IMAGE_ENDINGS) and its text members (`.txt`, `.json`) decoded as UTF-8."""
    samples: dict[str, Member] = {}
    try:
        with tarfile.open(path, "r:") as archive:
            for info in archive:
                if info.isfile():
                    _add_member(archive, info, samples)
    except (tarfile.TarError, OSError) as error:
        raise ContainerError(f"{path}: not a readable tar file ({error})") from None
    for sample in samples.values():
        if not sample.member:
            sample.problem = "no image member in this sample (" + ", ".join(sorted(sample.texts)) + ")"
        yield sample


def first_text_sample(path: Path) -> Member | None:
    """Give a shard's first sample with a text member, reading no further than that sample
    (a declaration's check: the columns a shard's captions have)."""
    samples: dict[str, Member] = {}
    try:
        with tarfile.open(path, "r:") as archive:
            for info in archive:
                if not info.isfile():
                    continue
                _add_member(archive, info, samples)
                texts = [sample for sample in samples.values() if sample.texts]
                # A sample's members lie together: once another key begins, the first is whole.
                if texts and list(samples)[-1] != texts[0].item_id:
                    return texts[0]
    except (tarfile.TarError, OSError) as error:
        raise ContainerError(f"{path}: not a readable tar file ({error})") from None
    return next((sample for sample in samples.values() if sample.texts), None)


def _add_member(archive: tarfile.TarFile, info: tarfile.TarInfo, samples: dict[str, Member]) -> None:
    folder, _, base = info.name.rpartition("/")
    stem, dot, ending = base.partition(".")
    if not dot or base.startswith("."):
        return
    key = f"{folder}/{stem}" if folder else stem
    sample = samples.setdefault(key, Member(key, "", len(samples) + 1))
    ending = ending.lower()
    if ending in TAR_IMAGE_ENDINGS:
        if not sample.member:
            sample.member = f"{info.offset_data}+{info.size}"
    elif ending in ("txt", "json", "cls"):
        handle = archive.extractfile(info)
        sample.texts[ending] = handle.read().decode("utf-8", "replace") if handle else ""


def parquet_members(path: Path, image_column: str, id_column: str) -> Iterator[tuple[Member, bytes | None]]:
    """List a parquet file's rows with their image bytes (Hugging Face's `{bytes, path}` struct,
    or a plain binary column). Ids come from `id_column`, or are `<file stem>/<row>` (0-based)
    where the file has no such column."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    names = parquet.schema_arrow.names
    if image_column not in names:
        raise ContainerError(
            f"{path}: no image column {image_column!r} (columns: {', '.join(names)}); name it as image_column"
        )
    columns = [image_column] + ([id_column] if id_column in names else [])
    row = 0
    for group in range(parquet.num_row_groups):
        table = parquet.read_row_group(group, columns=columns)
        ids = table.column(id_column).to_pylist() if id_column in names else None
        for index, value in enumerate(table.column(image_column).to_pylist()):
            item_id = str(ids[index]) if ids is not None else f"{path.stem}/{row}"
            data = _image_value(value)
            member = Member(item_id, f"{group}/{index}/{image_column}", row + 1)
            if data is None:
                member.problem = "no image bytes in this row"
            yield member, data
            row += 1


def lmdb_members(path: Path) -> Iterator[tuple[Member, bytes | None]]:
    """List CN-CLIP's LMDB of images in key order, with their decoded bytes."""
    with _lmdb_environment(str(path)).begin() as transaction:
        for number, (key, value) in enumerate(
            ((k, v) for k, v in transaction.cursor() if k != LMDB_COUNT_KEY), start=1
        ):
            member = Member(key.decode("utf-8", "replace"), key.decode("utf-8", "replace"), number)
            try:
                yield member, decode_base64(bytes(value))
            except binascii.Error as error:
                member.problem = f"the image is not valid base64 ({error})"
                yield member, None


def _lmdb_environment(path: str) -> Any:  # lmdb has no type stubs
    import lmdb

    try:
        return lmdb.open(path, readonly=True, lock=False, readahead=False, max_readers=512)
    except lmdb.Error as error:
        raise ContainerError(f"{path}: not a readable LMDB ({error})") from None


def _image_value(value: object) -> bytes | None:
    if isinstance(value, dict):
        value = value.get("bytes")
    return bytes(value) if isinstance(value, bytes | bytearray | memoryview) and value else None


# ---- reading one member --------------------------------------------------------------


def read_member(path: str) -> bytes:
    """Give the bytes of the image a locator names; ContainerError says why it cannot."""
    container, _, member = path.rpartition(SEPARATOR)
    image_format = container_format(container)
    try:
        if image_format == CN_CLIP:
            return _tsv_image(container, int(member))
        if image_format == WEBDATASET:
            offset, _, size = member.partition("+")
            with open(container, "rb") as handle:
                handle.seek(int(offset))
                data = handle.read(int(size))
            if len(data) != int(size):
                raise ContainerError(f"{path}: the tar ends before this member's {size} bytes")
            return data
        if image_format == PARQUET:
            group, row, column = member.split("/", 2)
            stamp = os.stat(container).st_mtime_ns
            found = _image_value(_row_group_column(container, stamp, int(group), column)[int(row)])
            if found is None:
                raise ContainerError(f"{path}: no image bytes in this row")
            return found
        if image_format == LMDB:
            with _open_lmdb(container).begin() as transaction:
                value = transaction.get(member.encode("utf-8"))
            if value is None:
                raise ContainerError(f"{path}: no such key in the LMDB")
            return decode_base64(bytes(value))
    except FileNotFoundError:
        raise ContainerError(f"{container}: file does not exist") from None
    except (ValueError, IndexError) as error:
        raise ContainerError(f"{path}: not a member of {container} ({error})") from None
    raise ContainerError(f"{path}: {container} is not a container tuwen reads (.tsv, .tar, .parquet)")


def _tsv_image(container: str, offset: int) -> bytes:
    with open(container, "rb") as handle:
        handle.seek(offset)
        line = handle.readline()
    _, tab, encoded = line.partition(b"\t")
    if not tab:
        raise ContainerError(f"{container} at byte {offset}: no tab between the image id and its base64")
    try:
        return decode_base64(encoded)
    except binascii.Error as error:
        raise ContainerError(
            f"{container} at byte {offset}: the image is not valid base64 ({error})"
        ) from None


# CN-CLIP writes its TSVs with urlsafe base64 (`-_`); other tools use the standard `+/`.
URLSAFE = bytes.maketrans(b"-_", b"+/")


def decode_base64(encoded: bytes) -> bytes:
    """Decode a TSV's base64 image, urlsafe or standard; binascii.Error where it is neither."""
    return base64.b64decode(encoded.strip().translate(URLSAFE), validate=True)


@lru_cache(maxsize=8)
def _open_lmdb(container: str) -> Any:  # one environment per process and LMDB
    return _lmdb_environment(container)


@lru_cache(maxsize=4)
def _row_group_column(container: str, stamp: int, group: int, column: str) -> list:
    # Encoding reads a shard's images in manifest order, row after row of one row group:
    # the row group is read once, not once per image. `stamp` keys out a rewritten file.
    import pyarrow.parquet as pq

    return pq.ParquetFile(container).read_row_group(group, columns=[column]).column(column).to_pylist()
