"""The record of a finished run, results/finished.json: what the run's last job (`finish_run`)
writes, and the check that a run folder still holds exactly that state.

The record lists every file a reader of the run reads, by what it is (the plan of
`tuwen.run.plans.finished_plan`, and the files each index description names), with the size
and modification time each had when the run finished. While Snakemake reruns a run, the
files it rewrites no longer match, and the record itself is rewritten only when the rerun
is complete: so a reader that trusts only matching files never sees a half-rewritten run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from tuwen.errors import TuwenError
from tuwen.files.atomic import write_text_atomic
from tuwen.run import layout

# Plan keys whose values are not files (tuwen.run.plans.NOT_FILES, as the record keeps them).
NOT_FILES = frozenset({"kind"})


class RunNotFinished(TuwenError):
    """A run folder that holds no complete, readable finished run, and what to do about it."""


def not_finished(folder: Path, why: str) -> RunNotFinished:
    return RunNotFinished(
        f"{folder} holds no finished run to read ({why}); run the workflow there to its end "
        f"(make run, or snakemake --directory {folder})"
    )


def plan_files(plan: object) -> Iterator[str]:
    """Give every file a plan names, in its order (settings that are not files left out)."""
    if isinstance(plan, dict):
        for key, value in plan.items():
            if key not in NOT_FILES:
                yield from plan_files(value)
    elif isinstance(plan, list):
        for item in plan:
            yield from plan_files(item)
    elif isinstance(plan, str):
        yield plan


def indexed_files(folder: Path, plan: dict) -> list[str]:
    """Give the files the plan's index descriptions name (trained file, segments, shards)."""
    files = []
    for path in plan.get("indexes", {}).values():
        described = json.loads((folder / path).read_text(encoding="utf-8")).get("index") or {}
        files += [described["trained"], *described["segments"]] if described else []
    return files


def stamp(path: Path) -> list[int] | None:
    """Give a file's size and modification time (ns), or None when it is gone."""
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    return [status.st_size, status.st_mtime_ns]


def write_record(folder: Path, plan: dict, out: Path) -> dict:
    """Write the record of the run in `folder`: the plan, and the stamp of every file it names."""
    files = dict.fromkeys([*plan_files(plan), *indexed_files(folder, plan)])
    stamps = {}
    for path in files:
        found = stamp(folder / path)
        if found is None:
            raise TuwenError(f"{folder / path}: a file the finished run is read from is missing")
        stamps[path] = found
    record = {"plan": plan, "stamps": stamps}
    write_text_atomic(out, json.dumps(record, ensure_ascii=False, indent=1) + "\n")
    return record


def record_stamp(folder: Path) -> list[int] | None:
    """Give the stamp of a run's record: what changes when a rerun has finished."""
    return stamp(folder / layout.finished())


def read_record(folder: Path) -> tuple[dict, list[int]]:
    """Give a finished run's record and its stamp, once every file it names is as it was when
    the run finished; RunNotFinished says what is missing or changed."""
    path = folder / layout.finished()
    before = stamp(path)
    if before is None:
        raise not_finished(folder, f"{layout.finished()} is missing")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise not_finished(folder, f"{layout.finished()} cannot be read: {error}") from None
    check_stamps(folder, record)
    return record, before


def check_stamps(folder: Path, record: dict) -> None:
    """Check that every file of a record still has its recorded size and time."""
    for path, expected in record["stamps"].items():
        found = stamp(folder / path)
        if found is None:
            raise not_finished(folder, f"{path} is gone since the run finished: a rerun is under way")
        if found != expected:
            raise not_finished(folder, f"{path} changed since the run finished: a rerun is under way")


def relative(path: str | os.PathLike, folder: Path) -> str:
    """Give a path as the record names it: relative to the run folder where it lies inside."""
    path = Path(path)
    return str(path.relative_to(folder)) if path.is_absolute() and path.is_relative_to(folder) else str(path)
