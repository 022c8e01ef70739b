"""Rows of a user's table file, whatever its format: CSV, TSV, JSON Lines or Parquet.

One reader for every table a run is given (captions, training pairs, query lists, ground
truth), so each accepts the same formats and names a bad row the same way: by file and
1-based data-row number. Text files may be UTF-8, UTF-8 with BOM or GB18030.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

from tuwen.errors import TuwenError

CSV_ENCODINGS = ("utf-8-sig", "gb18030")
DELIMITERS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
JSON_LINES = (".jsonl", ".ndjson")
PARQUET = ".parquet"
TABLE_SUFFIXES = frozenset([*DELIMITERS, *JSON_LINES, PARQUET])  # the file-name endings read


class InputError(TuwenError):
    """Input that stops a stage as a whole (a missing column, an unreadable file)."""


@dataclass(frozen=True)
class Records:
    """Rows of a table file as dicts of strings, with the 1-based data-row number of each."""

    path: str
    encoding: str
    columns: list[str]
    rows: list[tuple[int, dict[str, str]]]


def read_records(path: str | os.PathLike, required: list[str]) -> Records:
    """Read a table file, checking its required columns; blank rows are skipped."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file does not exist")
    suffix = path.suffix.lower()
    if suffix == PARQUET:
        columns, rows, encoding = _parquet_rows(path)
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
    if suffix == PARQUET:
        import pyarrow.parquet as pq

        meta = pq.read_metadata(path)
        return list(meta.schema.names), meta.num_rows > 0
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


Rows = tuple[list[str], list[tuple[int, dict[str, str]]], str]  # columns, numbered rows, encoding


def _delimited_rows(path: Path, delimiter: str, required: list[str]) -> Rows:
    data = path.read_bytes()
    text = _decode(path, data)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        raise InputError(f"{path}: file is empty, expected a header with {', '.join(required)}")
    columns = [name.strip().lstrip("\ufeff") for name in header]
    rows = []
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
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        value = _json_object(path, line, number)
        columns.update(dict.fromkeys(value))
        rows.append((number, {k: "" if v is None else str(v) for k, v in value.items()}))
    return list(columns), [(n, {c: r.get(c, "") for c in columns}) for n, r in rows], "utf-8"


def _parquet_rows(path: Path) -> Rows:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    columns = list(table.column_names)
    values = {name: table.column(name).to_pylist() for name in columns}
    rows = [
        (number, {c: "" if values[c][i] is None else str(values[c][i]) for c in columns})
        for i, number in enumerate(range(1, table.num_rows + 1))
    ]
    return columns, rows, "parquet"
