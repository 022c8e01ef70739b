"""The tree is the architecture: tuwen's packages in layers that import only downwards, each
default written once (in the schema), every rule's inputs one file away, a short README."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import REPO
from tuwen.run.schema import leaf_keys, load_schema

# The layers of tuwen, lowest first: a module may import its own package and those before it.
LAYERS = [
    ("tuwen.errors", "tuwen.logs"),
    ("tuwen.files",),
    ("tuwen.run",),
    ("tuwen.clip",),
    ("tuwen.data",),
    ("tuwen.text",),
    ("tuwen.ranking",),
    ("tuwen.train",),
    ("tuwen.report",),
    ("tuwen.finished",),
    ("tuwen.export",),
    ("tuwen.serve",),
    ("tuwen.cli", "tuwen.__main__"),
]
LAYER_OF = {unit: number for number, units in enumerate(LAYERS) for unit in units}
MODULES = sorted(path for path in (REPO / "tuwen").rglob("*.py"))


def unit_of(module: str) -> str:
    """Give the layer unit of a module: its package under tuwen, or a top-level module."""
    parts = module.split(".")
    return ".".join(parts[:2])


def module_name(path: Path) -> str:
    relative = path.relative_to(REPO).with_suffix("")
    parts = list(relative.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Give every tuwen module a file imports, at the top or inside a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "tuwen":
                found |= {f"tuwen.{alias.name}" for alias in node.names}
            elif node.module.startswith("tuwen."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("tuwen.")}
    return found


def test_every_module_of_tuwen_is_in_a_layer():
    units = {unit_of(module_name(path)) for path in MODULES} - {"tuwen"}
    assert sorted(units - set(LAYER_OF)) == []
    assert set(LAYER_OF) <= units


def test_no_module_imports_a_package_above_its_own():
    upward = []
    for path in MODULES:
        module = module_name(path)
        if module == "tuwen":
            continue
        own = LAYER_OF[unit_of(module)]
        for target in sorted(imported(path)):
            if LAYER_OF[unit_of(target)] > own:
                upward.append(f"{module} imports {target}")
    assert upward == []


def test_the_import_check_sees_an_upward_import(tmp_path):
    path = REPO / "tuwen" / "run" / "layout.py"
    source = path.read_text(encoding="utf-8") + "\n\ndef _late():\n    from tuwen.serve.app import ROUTES\n"
    copy = tmp_path / "layout.py"
    copy.write_text(source, encoding="utf-8")
    assert "tuwen.serve.app" in imported(copy)
    assert LAYER_OF[unit_of("tuwen.serve.app")] > LAYER_OF[unit_of("tuwen.run.layout")]


# ---- each default once -----------------------------------------------------------------------

SCHEMA = load_schema()


def item_keys(spec: dict) -> dict[str, dict]:
    """Give the keys of the items a user names (a collection's, a task's), nested ones too."""
    keys = {}
    for key, inner in spec.get("properties", {}).items():
        keys[key] = inner
        keys.update(item_keys(inner))
    return keys


SETTINGS = {**leaf_keys(SCHEMA)}
for section in ("collections", "tasks"):
    SETTINGS.update(item_keys(SCHEMA["properties"][section]["additionalProperties"]))
DEFAULTS = {
    key.rsplit(".", 1)[-1]: spec["default"]
    for key, spec in SETTINGS.items()
    if "default" in spec and not isinstance(spec["default"], bool | dict | list) and spec["default"] != ""
}
# Numbers no one writes by chance: a module constant of one of these is the default again.
DISTINCT_NUMBERS = {
    value for value in DEFAULTS.values() if isinstance(value, int | float) and abs(value) >= 1000
}
CODE = [*MODULES, *sorted((REPO / "scripts").glob("*.py"))]


def restated_defaults(path: Path) -> list[str]:
    """Give each place in a file that writes a schema default again: a parameter or dataclass
    field named like a setting with the setting's default, or `.get("<setting>", <default>)`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    def check(name: str, value: ast.AST | None, line: int) -> None:
        if name in DEFAULTS and isinstance(value, ast.Constant) and value.value == DEFAULTS[name]:
            found.append(f"{path.name}:{line}: {name} = {value.value!r}")

    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            arguments = [*node.args.posonlyargs, *node.args.args]
            for argument, default in zip(reversed(arguments), reversed(node.args.defaults), strict=False):
                check(argument.arg, default, node.lineno)
            for argument, default in zip(node.args.kwonlyargs, node.args.kw_defaults, strict=True):
                check(argument.arg, default, node.lineno)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            check(node.target.id, node.value, node.lineno)
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            value = node.value.value
            if isinstance(value, int | float) and not isinstance(value, bool) and value in DISTINCT_NUMBERS:
                found.append(f"{path.name}:{node.lineno}: a setting's default {value!r}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and len(node.args) == 2
            and isinstance(node.args[0], ast.Constant)
        ):
            check(str(node.args[0].value), node.args[1], node.lineno)
    return found


def test_no_schema_default_is_written_again_in_code():
    assert {"nprobe", "candidates", "batch_size", "max_image_pixels", "segment_base", "k"} <= set(DEFAULTS)
    assert [place for path in CODE for place in restated_defaults(path)] == []


def test_the_default_check_finds_a_restated_default(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def search(nprobe=64):\n    pass\n\n\nclass Options:\n    candidates: int = 100\n\n\n"
        "value = {}.get('segment_base', 4)\nLIMIT = 89_478_485\n",
        encoding="utf-8",
    )
    assert len(restated_defaults(sample)) == 4


# ---- rules, README ---------------------------------------------------------------------------


def test_each_rules_file_is_one_stage_and_the_lookups_are_in_common():
    assert not (REPO / "rules" / "inputs").exists()
    for path in (REPO / "rules").glob("*.smk"):
        text = path.read_text(encoding="utf-8")
        if path.name == "common.smk":
            assert not re.search(r"^(rule|checkpoint) ", text, re.M)
        else:
            assert not re.search(r"^def ", text, re.M), f"{path.name} defines a function"
            assert re.search(r"^(?:rule|checkpoint) \w+:", text, re.M), path.name


@pytest.mark.parametrize("limit", [450])
def test_the_readme_is_a_guide_of_at_most_450_lines(limit):
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= limit


def test_the_architecture_document_maps_every_package():
    document = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    for path in sorted((REPO / "tuwen").iterdir()):
        if path.is_dir() and (path / "__init__.py").exists():
            assert f"{path.name}/" in document, path.name
            for module in sorted(path.glob("*.py")):
                if module.name != "__init__.py":
                    assert module.name in document, f"{path.name}/{module.name}"
