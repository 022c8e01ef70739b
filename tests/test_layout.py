"""Said once: tuwen.run.layout owns the results/ paths, tuwen.run.declaration the declared run."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import REPO, config_with
from tuwen.run import layout
from tuwen.run.declaration import IMAGES, TEXTS, data_folder, declare_run
from tuwen.run.plans import query_order

LIBRARY_AND_SCRIPTS = [
    path
    for path in [*(REPO / "tuwen").rglob("*.py"), *(REPO / "scripts").glob("*.py")]
    if path != REPO / "tuwen/run/layout.py"
]


def string_constants(path: Path) -> list[tuple[int, str]]:
    """The string constants of a module that are not docstrings."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_only_the_layout_builds_paths_under_results():
    found = [
        f"{path.relative_to(REPO)}:{line}: {value!r}"
        for path in LIBRARY_AND_SCRIPTS
        for line, value in string_constants(path)
        if value == "results" or value.startswith("results/")
    ]
    assert found == []


# How code used to tell images from captions, or one direction from the other, by guessing.
GUESSES = [
    r'"(image|text)_id" in ',
    r"\.parent\.name",
    r"hasattr\(snakemake\.wildcards",
    r'endswith\("(texts|images)\.parquet"\)',
    r'== "(t2i|i2t)"',
    r'\("t2i", "i2t"\),\s*snakemake',
]


def test_no_module_guesses_a_collection_kind_or_a_direction():
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in LIBRARY_AND_SCRIPTS
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if any(re.search(pattern, line) for pattern in GUESSES)
    ]
    assert found == []


def test_every_collection_and_task_of_the_contest_preset_is_consistent():
    run = declare_run(config_with({"data_root": "demo"}))
    for task in [*run.tasks.values(), *run.validation_tasks.values()]:
        kinds = {run.collections[task.queries].kind, run.collections[task.gallery].kind}
        assert kinds == {IMAGES, TEXTS}
        assert task.image_side != task.text_side
    assert layout.manifest("t2i_gallery", IMAGES) == "results/manifest/t2i_gallery/images.parquet"
    assert query_order(run, run.tasks["i2t"]) == "results/query_lists/i2t/queries.parquet"
    assert query_order(run, run.tasks["t2i"]) == "results/manifest/t2i_queries/texts.parquet"


def test_the_architecture_document_names_every_rule():
    rules = {
        name
        for path in (REPO / "rules").glob("*.smk")
        for name in re.findall(r"^\s*(?:rule|checkpoint) (\w+):", path.read_text(encoding="utf-8"), re.M)
    }
    document = (REPO / "docs/architecture.md").read_text(encoding="utf-8")
    assert len(rules) > 20
    assert sorted(rule for rule in rules if f"`{rule}`" not in document) == []
    assert (REPO / "docs/rulegraph.png").stat().st_size > 10_000
    for source in ("config.yaml", "tuwen/run/config.schema.yaml"):
        assert "DESIGN.md" not in (REPO / source).read_text(encoding="utf-8")


def test_what_the_data_root_setting_names():
    assert data_folder("demo") == layout.demo_data()
    assert data_folder("~/photos").endswith("/photos") and not data_folder("~/photos").startswith("~")
