"""One source of truth for the config: schema defaults, command-line overrides, speed-only keys."""

from __future__ import annotations

import copy
import subprocess

import pytest
import yaml

from tests.conftest import REPO, SMALL_DEMO, planned_jobs, snakemake, snakemake_command
from tuwen.run.schema import coerce_by_schema, load_schema, schema_defaults, speed_only_keys

SCHEMA = load_schema()


def test_schema_defaults_equal_config_yaml():
    config = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))
    assert schema_defaults(SCHEMA) == config


def described_keys(schema: dict, prefix: str = "") -> list[tuple[str, bool]]:
    keys = []
    for key, spec in schema.get("properties", {}).items():
        keys.append((prefix + key, bool(spec.get("description"))))
        keys += described_keys(spec, f"{prefix}{key}.")
    return keys


def test_every_key_is_described():
    keys = described_keys(SCHEMA)
    assert len(keys) > 40
    assert [key for key, described in keys if not described] == []


def test_command_line_strings_are_typed_by_the_schema():
    # What Snakemake hands over for: train={"enabled": true, "epochs": 5, "val_fraction": 0.2}
    # encode={num_workers: 3} ground_truth= seed=4 retrieval="{keep_top: 12}"
    # 'models=[tuwen-tiny-rn, {name: tuwen-tiny, train: {epochs: 3, lock_image: true}}]'
    given = {
        "train": {"enabled": "true", "epochs": "5", "val_fraction": "0.2", "lr": "1e-4"},
        "encode": {"num_workers": "3", "device": "cpu"},
        "ground_truth": None,
        "models": ["tuwen-tiny-rn", {"name": "tuwen-tiny", "train": {"epochs": "3", "lock_image": "true"}}],
        "seed": "4",
        "retrieval": "{keep_top: 12}",
        "fusion": {"enabled": "true", "weights": ["0.5", "2"], "temperatures": "[0.1]"},
    }
    assert coerce_by_schema(given, SCHEMA) == {
        "train": {"enabled": True, "epochs": 5, "val_fraction": 0.2, "lr": 1e-4},
        "encode": {"num_workers": 3, "device": "cpu"},
        "ground_truth": "",
        "models": ["tuwen-tiny-rn", {"name": "tuwen-tiny", "train": {"epochs": 3, "lock_image": True}}],
        "seed": 4,
        "retrieval": {"keep_top": 12},
        "fusion": {"enabled": True, "weights": [0.5, 2], "temperatures": [0.1]},
    }
    assert coerce_by_schema({"encode": {"num_workers": "auto"}}, SCHEMA) == {
        "encode": {"num_workers": "auto"}
    }
    # Values that fit no declared type stay as given, for the validator to name.
    assert coerce_by_schema({"train": {"epochs": "five"}}, SCHEMA) == {"train": {"epochs": "five"}}


def test_nested_overrides_work_from_the_command_line(tmp_path):
    command = snakemake_command(tmp_path, "-n", "--config", 'train={"enabled": false}', "shards={size: 7}")

    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rules = {rule for rule, _ in planned_jobs(result.stdout)}
    assert "train_model" not in rules and "search_topk" in rules
    wrong = subprocess.run(
        snakemake_command(tmp_path, "-n", "--config", "train={epochs: five}"), capture_output=True, text=True
    )
    assert wrong.returncode != 0 and "'five' is not of type 'integer'" in wrong.stdout + wrong.stderr


def other_value(spec: dict, current):
    """A valid value of a schema key other than `current`."""
    choices = spec.get("enum") or [
        option.get("const") for option in spec.get("oneOf", []) if "const" in option
    ]
    if spec.get("type") == "integer" or any(o.get("type") == "integer" for o in spec.get("oneOf", [])):
        return 1 if not isinstance(current, int) or current > 1 else current + 1
    return next(choice for choice in choices if choice != current)


@pytest.mark.parametrize("section", ["train", "encode"])
def test_changing_speed_settings_reruns_nothing(demo_run, section):
    keys = speed_only_keys(SCHEMA, section)
    assert len(keys) >= 3
    changed = copy.deepcopy(SMALL_DEMO)
    defaults = schema_defaults(SCHEMA)[section]
    properties = SCHEMA["properties"][section]["properties"]
    changed.setdefault(section, {}).update({k: other_value(properties[k], defaults[k]) for k in keys})
    result = snakemake(demo_run, "-n", config=changed)
    assert planned_jobs(result.stdout) == [], f"{changed[section]} reran:\n{result.stdout[-2000:]}"
    # The check can fail: a setting that changes results does rerun.
    if section == "train":
        changed["train"]["epochs"] += 1
        rules = {rule for rule, _ in planned_jobs(snakemake(demo_run, "-n", config=changed).stdout)}
        assert "train_model" in rules
