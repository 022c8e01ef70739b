"""The one reader of a finished run: it reads a run only in the state its record names, a run
being rerun is refused, and a live server keeps the last complete state until the next."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from tuwen.finished.reader import read_finished
from tuwen.finished.record import RunNotFinished, read_record, write_record
from tuwen.run import layout
from tuwen.serve.loaded_run import LiveRun


@pytest.fixture
def run_copy(demo_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(demo_run, copy, symlinks=True, copy_function=shutil.copy2)
    return copy


def test_a_finished_run_is_read_from_its_record(demo_run):
    finished = read_finished(demo_run)
    record = json.loads((demo_run / layout.finished()).read_text(encoding="utf-8"))
    assert finished.declared.ranking_model.name == "tuwen-tiny-rn"
    assert set(finished.collections) == {"t2i_gallery", "t2i_queries", "i2t_images", "i2t_gallery"}
    assert finished.channels["clip:tuwen-tiny-rn"].tag.startswith("tuwen-tiny-rn-")
    assert set(finished.rankings) == {"t2i", "i2t"} and finished.rankings["t2i"].recipe is None
    assert finished.default_gallery("texts") == "t2i_gallery"
    assert finished.default_gallery("images") == "i2t_gallery"
    gallery = finished.collections["t2i_gallery"]
    # The reader lists exactly the files the record stamped, nothing found by looking around.
    for path in gallery.features["clip:tuwen-tiny-rn"]:
        assert str(path.relative_to(demo_run)) in record["stamps"]
    assert str(gallery.assignment.relative_to(demo_run)) in record["stamps"]


@pytest.mark.parametrize("change", ["touched", "removed"])
def test_a_run_whose_files_changed_since_it_finished_is_not_read(run_copy, change):
    shard = read_finished(run_copy).collections["t2i_gallery"].features["clip:tuwen-tiny-rn"][0]
    if change == "touched":
        os.utime(shard, ns=(1, 1))
    else:
        shard.unlink()
    message = "changed since the run finished" if change == "touched" else "gone since the run finished"
    with pytest.raises(RunNotFinished, match=message):
        read_finished(run_copy)


def test_a_folder_without_a_record_is_no_finished_run(tmp_path):
    with pytest.raises(RunNotFinished, match=r"results/finished.json is missing.*snakemake --directory"):
        read_finished(tmp_path)


def test_a_live_server_keeps_the_last_complete_state_until_the_record_changes(run_copy):
    live = LiveRun(run_copy, check_every=0)
    first = live.current()
    manifest = run_copy / layout.manifest("t2i_gallery", "images")
    os.utime(manifest, ns=(2, 2))  # a rerun rewriting the run: the record no longer matches
    for _ in range(3):
        assert live.current() is first
    record, _ = read_record_unchecked(run_copy)
    write_record(run_copy, record["plan"], run_copy / layout.finished())  # the rerun has finished
    deadline = time.time() + 60
    while live.current() is first and time.time() < deadline:
        time.sleep(0.2)
    assert live.current() is not first and live.reload_error is None
    assert live.current().finished.stamp != first.finished.stamp


def read_record_unchecked(folder: Path) -> tuple[dict, None]:
    """The record as written, whether or not the files still match it."""
    return json.loads((folder / layout.finished()).read_text(encoding="utf-8")), None


def test_the_record_is_checked_file_by_file(run_copy):
    record, stamp = read_record(run_copy)
    assert stamp and len(record["stamps"]) > 10
    with pytest.raises(Exception, match="missing"):
        write_record(run_copy, {**record["plan"], "chosen": "results/fusion/none.json"}, run_copy / "x.json")
