"""Every Snakemake entry point's imports from tuwen resolve (a broken one fails only mid-run)."""

import ast
import importlib
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "scripts").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_script_imports_resolve(script):
    tree = ast.parse(script.read_text(encoding="utf-8"))
    imports = [
        n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("tuwen")
    ]
    assert imports, f"{script.name} calls no tuwen function"
    for node in imports:
        module = importlib.import_module(node.module)
        for alias in node.names:
            assert hasattr(module, alias.name), f"{script.name}: {node.module} has no {alias.name}"
