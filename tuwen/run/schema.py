"""The workflow's config schema: the one place every setting's default is written, the
config typed by it, and its keys as the settings groups and tests enumerate them
(torch-free: the Snakefile imports it at parse time).

`config.schema.yaml` beside this module is the schema: the workflow validates its config
against it (and so fills in every default), and library code that needs a default outside
a run reads it from here (`schema_default`), never writes it again.

Snakemake parses a nested `--config` value such as `train={enabled: true, epochs: 5}`
with YAML's base loader, so every scalar inside arrives as a string ("true", "5"), and
an empty value (`checkpoint=`) as None. `coerce_by_schema` turns such values into the
types `config.schema.yaml` declares, before validation, so that every key can be set
from the command line. Values that do not fit are left alone for the validator to name.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")

# Schema annotation of a key that changes only how fast results come, never what they
# are: such keys reach no job as a setting, so changing one reruns nothing.
SPEED_ONLY = "x-speed-only"
# Schema annotation, with the reason, of a key that never changes an existing output: it
# places files, asks a scheduler for resources, or applies only to what is made later.
RERUNS_NOTHING = "x-reruns-nothing"

_BOOLEANS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    """Read the config schema."""
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@cache
def _defaults() -> dict:
    return schema_defaults(load_schema_once())


def schema_default(dotted: str) -> Any:
    """Give a setting's default as the schema writes it (`index.nprobe`, `weights_dir`)."""
    value: Any = _defaults()
    for part in dotted.split("."):
        value = value[part]
    return value


def item_default(section: str, dotted: str) -> Any:
    """Give the default of a key of an item the user names in `section` (a collection's
    `caption_column`, a task's `k` or `ground_truth.query_column`), as the schema writes it."""
    spec = load_schema_once()["properties"][section]["additionalProperties"]
    for part in dotted.split("."):
        spec = spec["properties"][part]
    return spec["default"]


@cache
def load_schema_once() -> dict:
    return load_schema()


def coerce_by_schema(value: Any, schema: dict) -> Any:
    """Give `value` with strings turned into the types that `schema` declares, recursively."""
    for option in schema.get("oneOf", []) + schema.get("anyOf", []):
        coerced = coerce_by_schema(value, option)
        if _fits(coerced, option):
            return coerced
    if "enum" in schema or "const" in schema:
        allowed = schema.get("enum", [schema.get("const")])
        return next((a for a in allowed if isinstance(value, str) and str(a) == value), value)
    kind = schema.get("type")
    if kind in ("object", "array"):
        value = _yaml_or_same(value)
        if kind == "object" and isinstance(value, dict):
            properties = schema.get("properties", {})
            # Keys of a mapping of the user's names (collections, tasks) follow additionalProperties.
            others = schema.get("additionalProperties")
            others = others if isinstance(others, dict) else None
            return {
                k: coerce_by_schema(v, spec) if (spec := properties.get(k, others)) is not None else v
                for k, v in value.items()
            }
        if kind == "array" and isinstance(value, list):
            return [coerce_by_schema(item, schema.get("items", {})) for item in value]
        return value
    if value is None and kind == "string":
        return ""  # `--config checkpoint=` means the empty string, not null
    if not isinstance(value, str):
        return value
    text = value.strip()
    if kind == "boolean":
        return _BOOLEANS.get(text.lower(), value)
    if kind == "integer":
        try:
            return int(text)
        except ValueError:
            return value
    if kind == "number":
        try:
            return float(text) if any(c in text.lower() for c in ".e") else int(text)
        except ValueError:
            return value
    return value


def _yaml_or_same(value: Any) -> Any:
    """Give a string parsed as YAML (a mapping or list written on the command line), else `value`."""
    if not isinstance(value, str):
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def _fits(value: Any, schema: dict) -> bool:
    if "const" in schema:
        return value == schema["const"]
    if "enum" in schema:
        return value in schema["enum"]
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return {
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": number,
        "boolean": isinstance(value, bool),
        "string": isinstance(value, str),
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
    }.get(str(schema.get("type")), True)


def coerce_config(config: dict, schema: dict) -> None:
    """Coerce a whole config in place (Snakemake's `config` object is shared by every rule file)."""
    typed = coerce_by_schema(config, schema)
    config.clear()
    config.update(typed)


def schema_defaults(schema: dict) -> dict:
    """Give the config that the schema's defaults alone make (nested objects filled in)."""
    defaults = {}
    for key, spec in schema.get("properties", {}).items():
        if spec.get("type") == "object" and "properties" in spec:
            defaults[key] = schema_defaults(spec)
        elif "default" in spec:
            defaults[key] = spec["default"]
    return defaults


def speed_only_keys(schema: dict, section: str) -> set[str]:
    """Give the keys of `section` that the schema marks as changing speed only."""
    properties = schema["properties"][section]["properties"]
    return {key for key, spec in properties.items() if spec.get(SPEED_ONLY)}


def leaf_keys(schema: dict, prefix: str = "") -> dict[str, dict]:
    """Give every setting (a key that is not a section) as dotted name -> its schema."""
    leaves = {}
    for key, spec in schema.get("properties", {}).items():
        if spec.get("type") == "object" and "properties" in spec:
            leaves.update(leaf_keys(spec, f"{prefix}{key}."))
        else:
            leaves[prefix + key] = spec
    return leaves


def changes_results(spec: dict) -> bool:
    """Can changing this setting change an existing output? Not if speed-only or marked to rerun nothing."""
    return not spec.get(SPEED_ONLY) and RERUNS_NOTHING not in spec
