"""Every command the README shows works as written (a dry run where a full run is too long).

Commands are taken from the README's bash blocks and from its inline code that starts
like a command. Each is run with the fewest changes that keep it from writing into this
clone or running for an hour: Snakemake gets `--dry-run` and a temporary `--directory`,
make gets `-n`, benchmarks `--help`; `python -m tuwen search` and `--report` run for real
against a finished demo run. A command of any other form fails the test until it is
given a way to be checked here.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, SAMPLE_DATA
from tuwen.demo import generate_demo

# About a dozen Snakemake dry runs and a report: minutes, so `make test-slow` (CI runs it).
pytestmark = pytest.mark.slow

README = REPO / "README.md"
COMMAND_START = re.compile(r"^(make |\.venv/bin/|python -m |snakemake )")


def readme_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    inline = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.DOTALL))
    commands += [code for code in inline if COMMAND_START.match(code)]
    return list(dict.fromkeys(commands))


COMMANDS = readme_commands()


@pytest.fixture(scope="module")
def contest_folder(tmp_path_factory) -> Path:
    """A small folder in the contest layout, standing in for /path/to/contest."""
    root = tmp_path_factory.mktemp("contest")
    generate_demo(root, train_pairs=40, queries=10)
    return root


def runnable(command: str, scratch: Path, demo_run: Path, contest: Path) -> tuple[list[str], Path]:
    """Give the argument list to run for a README command, and the folder to run it in."""
    words = shlex.split(command.replace("$PWD", str(REPO)).replace("/path/to/contest", str(contest)))
    if words[0] == "snakemake":
        words[0] = ".venv/bin/snakemake"
    tool = words[0].removeprefix(".venv/bin/")
    if words[0].startswith(".venv/bin/"):
        words[0] = str(REPO / words[0])
    if tool == "make":
        return ["make", "-n", *words[1:]], REPO
    if tool == "snakemake":
        if "--report" in words or "--lint" in words:
            return [*words, "--snakefile", str(REPO / "Snakefile"), "--directory", str(demo_run)], REPO
        if "--directory" in words:
            at = words.index("--directory") + 1
            words[at] = str(scratch / Path(words[at]).name)
        else:
            words += ["--directory", str(scratch / "run")]
        return [*words, "--dry-run"] if "--unlock" not in words else words, REPO
    if tool.startswith("python") and words[1:3] == ["-m", "tuwen"]:
        if len(words) == 3:
            return [*words, "--help"], REPO
        if "--run" in words:
            words[words.index("--run") + 1] = str(demo_run)
        return words, demo_run
    if tool.startswith("python") and words[1] == "-m" and words[2].startswith("bench."):
        return [*words[:3], "--help"], REPO
    raise AssertionError(f"README command of a form this test cannot check yet: {command}")


def test_readme_shows_the_commands_users_need():
    joined = "\n".join(COMMANDS)
    for expected in ("make run", "make test", "train={", "python -m tuwen search", "--workflow-profile"):
        assert expected in joined


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_works(command, tmp_path, demo_run, contest_folder):
    if "shared/data/teddy2024-sample" in command and not SAMPLE_DATA.is_dir():
        pytest.skip(f"the real sample is not at {SAMPLE_DATA}")
    args, cwd = runnable(command, tmp_path, demo_run, contest_folder)
    python = REPO / ".venv/bin/python"
    if args[0] in {"python", "python3"} or args[0].endswith("/python"):
        args[0] = str(python)
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (
        f"{command}\nran as: {shlex.join(args)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
