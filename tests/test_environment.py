"""The software environment matches the code: one env file for every rule, and it pins every import."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
ENV_FILE = REPO / "envs" / "tuwen.yaml"


def rule_blocks() -> dict[str, str]:
    blocks = {}
    for path in sorted((REPO / "rules").glob("*.smk")):
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"^(?:rule|checkpoint) (\w+):\n((?:[ \t]+.*\n|\n)+)", text, re.MULTILINE):
            blocks[match.group(1)] = match.group(2)
    return blocks


def test_every_rule_that_runs_code_uses_the_one_env_file():
    blocks = {name: body for name, body in rule_blocks().items() if "script:" in body}
    assert len(blocks) >= 15, sorted(blocks)
    for name, body in blocks.items():
        conda = re.search(r"conda:\s*\n\s*\"([^\"]+)\"", body)
        assert conda, f"rule {name} has no conda directive"
        assert (REPO / "rules" / conda.group(1)).resolve() == ENV_FILE, f"rule {name}: {conda.group(1)}"


def test_env_file_installs_the_lock_and_this_package():
    env = yaml.safe_load(ENV_FILE.read_text(encoding="utf-8"))
    assert "python=3.11" in env["dependencies"]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-r ../requirements.lock" in pip and "-e .." in pip
    assert (ENV_FILE.parent / "../requirements.lock").resolve() == REPO / "requirements.lock"
    assert (ENV_FILE.parent / ".." / "pyproject.toml").is_file()


def third_party_imports(paths: list[Path]) -> dict[str, str]:
    """Give each imported top-level module outside the standard library and tuwen, with a file using it."""
    found = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in {"tuwen", "__future__"}:
                    found.setdefault(top, str(path.relative_to(REPO)))
    return found


def test_every_module_the_code_imports_is_pinned_in_the_lock():
    pinned = set()
    for line in (REPO / "requirements.lock").read_text(encoding="utf-8").splitlines():
        if "==" in line and not line.startswith("#"):
            pinned.add(re.sub(r"[-_.]+", "-", line.split("==")[0]).lower())
    code = [*sorted((REPO / "tuwen").rglob("*.py")), *sorted((REPO / "scripts").glob("*.py"))]
    distributions = packages_distributions()
    imports = third_party_imports(code)
    assert {"torch", "cn_clip", "pandas", "matplotlib"} <= set(imports)
    for module, user in imports.items():
        owners = {re.sub(r"[-_.]+", "-", d).lower() for d in distributions.get(module, [])}
        assert owners, f"{user} imports {module}, which no installed distribution provides"
        assert owners & pinned, (
            f"{user} imports {module} ({', '.join(owners)}), not pinned in requirements.lock"
        )
