"""Rows of a user's table file, whatever its format: CSV, TSV, JSON Lines, Parquet, a COCO
captions JSON, or the text members of webdataset tar shards.

One reader for every table a run is given (captions, training pairs, query lists, ground
truth), so each accepts the same formats and names a bad row the same way: by file and
1-based data-row number. Text files may be UTF-8, UTF-8 with BOM or GB18030. A JSON or
Parquet list (CN-CLIP's `image_ids`) stays a list of strings: ground truth and training
pairs read one pair per element (`values`).

- COCO (`.json` with `images` and `annotations`): one row per annotation, with its `id`,
  `image_id`, `caption`, and the image's `file_name` (its id in a folder collection).
- webdataset (a `.tar`, or a folder of them): one row per sample with a `.txt` or `.json`
  member: `key`, `txt`, and the `.json` object's fields.
- Parquet also gives `_row`, `<file stem>/<row>` (0-based): the id of a parquet image
  collection without an id column.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tuwen.errors import TuwenError

if TYPE_CHECKING:
    from tuwen.files.containers import Member

CSV_ENCODINGS = ("utf-8-sig", "gb18030")
DELIMITERS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
JSON_LINES = (".jsonl", ".ndjson")
PARQUET = ".parquet"
COCO = ".json"
TAR = ".tar"
TABLE_SUFFIXES = frozenset([*DELIMITERS, *JSON_LINES, PARQUET, COCO, TAR])  # the file-name endings read
ROW_COLUMN = "_row"
COCO_COLUMNS = ("id", "image_id", "caption", "file_name")
Value = str | list[str]


class InputError(TuwenError):
    """Input that stops a stage as a whole (a missing column, an unreadable file)."""


@dataclass(frozen=True)
class Records:
    """Rows of a table file as dicts of strings (lists of strings where the format has lists),
    with the 1-based data-row number of each."""

    path: str
    encoding: str
    columns: list[str]
    rows: list[tuple[int, dict[str, Value]]]


def single(value: Value, where: str, column: str) -> str:
    """Give a field that must be one value, stripped; a list is an InputError naming the row."""
    if isinstance(value, list):
        raise InputError(
            f"{where}: {column} holds a list ({len(value)} values); name a column of single values"
        )
    return value.strip()


def values(value: Value) -> list[str]:
    """Give a field's values: a list's elements, or the one value (none where it is empty)."""
    items = value if isinstance(value, list) else [value]
    return [item.strip() for item in items if item.strip()]


def read_records(path: str | os.PathLike, required: list[str]) -> Records:
    """Read a table file, checking its required columns; blank rows are skipped."""
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir() and any(p.suffix.lower() == PARQUET for p in path.iterdir()):
        columns, rows, encoding = _parquet_folder_rows(path, required)
    elif path.is_dir() or suffix == TAR:
        columns, rows, encoding = _webdataset_rows(path)
    elif not path.is_file():
        raise InputError(f"{path}: file does not exist")
    elif suffix == PARQUET:
        columns, rows, encoding = _parquet_rows(path, required)
    elif suffix == COCO:
        columns, rows, encoding = _coco_rows(path)
    elif suffix in JSON_LINES:
        columns, rows, encoding = _json_rows(path)
    else:
        columns, rows, encoding = _delimited_rows(path, DELIMITERS.get(suffix, ","), required)
    missing = [name for name in required if name not in columns]
    if missing:
        raise InputError(
            f"{path}: missing required column(s) {', '.join(missing)}; "
            f"columns found: {', '.join(columns) or '(none)'}"
        )
    return Records(str(path), encoding, columns, rows)


def table_header(path: str | os.PathLike) -> tuple[list[str], bool]:
    """Give a table file's columns and whether it has a data row, reading as little as it can."""
    path = Path(path)
    suffix = path.suffix.lower()
    parquets = sorted(p for p in path.iterdir() if p.suffix.lower() == PARQUET) if path.is_dir() else []
    if path.is_dir() and not parquets or suffix == TAR:
        return _webdataset_header(path)
    if suffix == COCO:  # its columns are the format's; the whole file is read at ingest
        return list(COCO_COLUMNS), path.stat().st_size > 0
    if suffix == PARQUET or parquets:
        import pyarrow.parquet as pq

        metas = [pq.read_metadata(p) for p in parquets or [path]]
        return [*metas[0].schema.names, ROW_COLUMN], any(meta.num_rows > 0 for meta in metas)
    if suffix in JSON_LINES:
        with open(path, encoding="utf-8-sig") as handle:
            for line in handle:
                if line.strip():
                    return list(_json_object(path, line, 1)), True
        return [], False
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    text = _decode(path, head, partial=True)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=DELIMITERS.get(suffix, ","))
    header = next(reader, None) or []
    rows = any(any(v.strip() for v in values) for values in reader)
    return [name.strip().lstrip("\ufeff") for name in header], rows


def _decode(path: Path, data: bytes, partial: bool = False) -> str:
    for candidate in CSV_ENCODINGS:
        try:
            return data.decode(candidate)
        except UnicodeDecodeError as error:
            # A read cut short may end inside a character: what came before still decodes.
            if partial and error.start >= len(data) - 3:
                return data[: error.start].decode(candidate)
            continue
    raise InputError(f"{path}: not valid UTF-8 or GB18030 text; re-save it as UTF-8")


def _encoding_of(data: bytes) -> str:
    for candidate in CSV_ENCODINGS:
        try:
            data.decode(candidate)
            return candidate
        except UnicodeDecodeError:
            continue
    return ""


Rows = tuple[list[str], list[tuple[int, dict[str, Value]]], str]  # columns, numbered rows, encoding


def _delimited_rows(path: Path, delimiter: str, required: list[str]) -> Rows:
    data = path.read_bytes()
    text = _decode(path, data)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        raise InputError(f"{path}: file is empty, expected a header with {', '.join(required)}")
    columns = [name.strip().lstrip("\ufeff") for name in header]
    rows: list[tuple[int, dict[str, Value]]] = []
    for number, values in enumerate(reader, start=1):
        if not values or all(not v.strip() for v in values):
            continue
        values = values + [""] * (len(columns) - len(values))
        rows.append((number, dict(zip(columns, values, strict=False))))
    return columns, rows, _encoding_of(data)


def _json_object(path: Path, line: str, number: int) -> dict:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as error:
        raise InputError(
            f"{path} row {number}: not a JSON object ({error.msg}); one object per line"
        ) from None
    if not isinstance(value, dict):
        raise InputError(f"{path} row {number}: not a JSON object; one object per line")
    return value


def _json_rows(path: Path) -> Rows:
    text = _decode(path, path.read_bytes())
    columns: dict[str, None] = {}
    rows: list[tuple[int, dict[str, Value]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        value = _json_object(path, line, number)
        columns.update(dict.fromkeys(value))
        rows.append((number, {k: _field(v) for k, v in value.items()}))
    return list(columns), [(n, {c: r.get(c, "") for c in columns}) for n, r in rows], "utf-8"


def _field(value: object) -> Value:
    if value is None:
        return ""
    if isinstance(value, list):
        return ["" if v is None else str(v) for v in value]
    return str(value)


def _parquet_rows(path: Path, required: list[str]) -> Rows:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    columns = [*parquet.schema_arrow.names, ROW_COLUMN]
    # Only the columns asked for: a Hugging Face file's image column is most of its bytes.
    wanted = [c for c in dict.fromkeys(required) if c in parquet.schema_arrow.names] if required else None
    table = parquet.read(columns=wanted)
    read = {name: table.column(name).to_pylist() for name in table.column_names}
    read[ROW_COLUMN] = [f"{path.stem}/{i}" for i in range(table.num_rows)]
    rows = [(i + 1, {c: _field(read[c][i]) for c in read}) for i in range(table.num_rows)]
    return columns, rows, "parquet"


def _parquet_folder_rows(path: Path, required: list[str]) -> Rows:
    """A Hugging Face split in several parquet files: their rows in file-name order."""
    columns: dict[str, None] = {}
    rows: list[tuple[int, dict[str, Value]]] = []
    for file in sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == PARQUET):
        names, part, _ = _parquet_rows(file, required)
        columns.update(dict.fromkeys(names))
        rows += [(len(rows) + 1, row) for _, row in part]
    return list(columns), rows, "parquet"


def _coco_rows(path: Path) -> Rows:
    try:
        data = json.loads(_decode(path, path.read_bytes()))
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise InputError(f"{path}: not a COCO captions file (an object with images and annotations)")
    names = {str(image.get("id")): str(image.get("file_name", "")) for image in data.get("images") or []}
    rows: list[tuple[int, dict[str, Value]]] = []
    for number, annotation in enumerate(data["annotations"], start=1):
        image_id = _field(annotation.get("image_id"))
        row = {
            "id": _field(annotation.get("id")),
            "image_id": image_id,
            "caption": _field(annotation.get("caption")),
            "file_name": names.get(str(image_id), ""),
        }
        rows.append((number, row))
    return list(COCO_COLUMNS), rows, "utf-8"


def _webdataset_header(path: Path) -> tuple[list[str], bool]:
    """The columns of the first sample with text: each shard is read whole only at ingest."""
    from tuwen.files.containers import WEBDATASET, ContainerError, container_files, first_text_sample

    if not path.exists():
        raise InputError(f"{path}: does not exist")
    try:
        for tar in container_files(path, WEBDATASET):
            sample = first_text_sample(tar)
            if sample is not None:
                return ["key", "txt", *_json_fields(tar, sample)], True
    except ContainerError as error:
        raise InputError(str(error)) from None
    return ["key", "txt"], False


def _webdataset_rows(path: Path) -> Rows:
    from tuwen.files.containers import WEBDATASET, ContainerError, container_files, tar_samples

    if not path.exists():
        raise InputError(f"{path}: does not exist")
    columns: dict[str, None] = {"key": None, "txt": None}
    rows: list[tuple[int, dict[str, Value]]] = []
    try:
        for tar in container_files(path, WEBDATASET):
            for sample in tar_samples(tar):
                if not sample.texts:
                    continue
                row: dict[str, Value] = {"key": sample.item_id, "txt": sample.texts.get("txt", "")}
                if "json" in sample.texts:
                    row.update(_json_fields(tar, sample))
                columns.update(dict.fromkeys(row))
                rows.append((len(rows) + 1, row))
    except ContainerError as error:
        raise InputError(str(error)) from None
    return list(columns), [(n, {c: r.get(c, "") for c in columns}) for n, r in rows], "utf-8"


def _json_fields(tar: Path, sample: Member) -> dict[str, Value]:
    try:
        value = json.loads(sample.texts["json"])
    except json.JSONDecodeError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {k: _field(v) for k, v in value.items() if k not in ("key", "txt") and not isinstance(v, dict)}
