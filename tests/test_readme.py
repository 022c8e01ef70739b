"""Every command the README shows works as written (a dry run where a full run is too long).

Commands are taken from the README's bash blocks and from its inline code that starts
like a command. Each is run with the fewest changes that keep it from writing into this
clone or running for an hour: Snakemake gets `--dry-run` and a temporary `--directory`,
make gets `-n`, benchmarks `--help`; `python -m tuwen search` and `--report` run for real
against a finished demo run, `python -m tuwen serve` is started over it and asked once, and
the curl commands ask a server over it. A command of any other form fails the test until it is
given a way to be checked here.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, SAMPLE_DATA
from tuwen.data.demo import generate_demo

# About a dozen Snakemake dry runs and a report: minutes, so `make test-slow` (CI runs it).
pytestmark = pytest.mark.slow

README = REPO / "README.md"
COMMAND_START = re.compile(r"^(make |\.venv/bin/|python -m |snakemake |curl )")
README_PORT = "127.0.0.1:8000"


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
    generate_demo(root, train_pairs=40, queries=10, seed=0)
    return root


@pytest.fixture(scope="module")
def own_folder(tmp_path_factory) -> Path:
    """A folder for the README's own-data examples: photos/ (nested), questions.csv, pairs.tsv."""
    from tests.test_workflow_own_data import make_library

    root = tmp_path_factory.mktemp("own")
    made = make_library(root / "photos", 8)
    # The labels beside the photos, as the README's photo library section says to copy them.
    (root / "photos" / "labels.txt").write_text((REPO / "examples/labels.txt").read_text("utf-8"), "utf-8")
    (root / "questions.csv").write_text("编号,问题\nQ1,一个红色的圆形\n", encoding="utf-8")
    (root / "pairs.tsv").write_text(
        "path\tcaption\n" + "".join(f"{p}\t{c}\n" for p, c in made), encoding="utf-8"
    )
    return root


def runnable(
    command: str, scratch: Path, demo_run: Path, contest: Path, own: Path | None = None
) -> tuple[list[str], Path]:
    """Give the argument list to run for a README command, and the folder to run it in."""
    for placeholder, folder in (("/path/to/photos", own and own / "photos"), ("/path/to/folder", own)):
        if folder is not None:
            command = command.replace(placeholder, str(folder))
    command = command.replace("$TUWEN_SAMPLE", str(SAMPLE_DATA))
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
        return with_demo_filters(words, demo_run), demo_run
    if tool.startswith("python") and words[1] == "-m" and words[2].startswith("bench."):
        return [*words[:3], "--help"], REPO
    raise AssertionError(f"README command of a form this test cannot check yet: {command}")


def test_readme_shows_the_example_configs_as_they_are():
    """The README's own-data snippets are exactly examples/*.yaml (which the workflow tests run)."""
    import yaml

    shown = [
        yaml.safe_load(block)
        for block in re.findall(r"```yaml\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    ]
    examples = {
        p.name: yaml.safe_load(p.read_text(encoding="utf-8"))
        for p in sorted((REPO / "examples").glob("*.yaml"))
    }
    text = README.read_text(encoding="utf-8")
    # The layouts are shown in full; the dataset formats are named in their table.
    layouts = {"photos.yaml", "tags.yaml", "queries.yaml", "training.yaml"}
    assert layouts < set(examples) and all(examples[name] in shown for name in layouts), examples
    assert all(f"--configfile examples/{name}" in text for name in layouts)
    assert all(f"| `{name}` |" in text for name in set(examples) - layouts)


def test_readme_shows_the_commands_users_need():
    joined = "\n".join(COMMANDS)
    for expected in ("make run", "make test", "train={", "python -m tuwen search", "--workflow-profile"):
        assert expected in joined


@pytest.fixture(scope="module")
def readme_server(demo_run):
    """`python -m tuwen serve` over the demo run, for the README's curl commands."""
    from tests.test_serve import Server

    server = Server(demo_run)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def readme_milvus(demo_run, tmp_path_factory) -> Path:
    """A Milvus Lite file holding the demo run's galleries, standing in for the README's Milvus;
    exported by its own process, since one process at a time opens a Lite file."""
    uri = tmp_path_factory.mktemp("milvus") / "gallery.db"
    command = [str(REPO / ".venv/bin/python"), "-m", "tuwen", "export", "milvus", "--uri", str(uri)]
    subprocess.run([*command, "--run", str(demo_run)], check=True, capture_output=True, timeout=300)
    return uri


def with_milvus(command: str, uri: Path) -> str:
    """The command with its Milvus (a server URI or a Lite file) replaced by `uri`."""
    words = shlex.split(command)
    for option in ("--uri", "--milvus"):
        if option in words:
            words[words.index(option) + 1] = str(uri)
    if "--token" in words:
        del words[words.index("--token") : words.index("--token") + 2]
    return shlex.join(words)


def serve_command_answers(command: str, demo_run: Path) -> None:
    """Start a README `tuwen serve` command (over the demo run, on a free port) and ask it once."""
    from tests.test_serve import Server

    words = shlex.split(command)[4:]  # after `python -m tuwen serve`
    if "--run" in words:
        del words[words.index("--run") : words.index("--run") + 2]
    if "--port" in words:
        del words[words.index("--port") : words.index("--port") + 2]
    server = Server(demo_run, *words)
    try:
        assert server.get("/api/search", q="红色的圆形")[0] == 200
    finally:
        server.stop()


def demo_tag(demo_run: Path) -> str:
    """A tag of the demo run's photos (it tags them by its own labels, shapes and colours), for
    the README's commands that filter by a photo library's tag."""
    import pandas as pd

    return str(pd.read_csv(demo_run / "results/tags/t2i_gallery.csv")["label"].iloc[0])


def with_demo_filters(words: list[str], demo_run: Path) -> list[str]:
    """A README search's filters as the demo run can answer them: its tag; its photos' dates."""
    for option, value in (("--tag", demo_tag(demo_run)), ("--after", "2000-01-01")):
        if option in words:
            words[words.index(option) + 1] = value
    return [word.replace("tag=风景", f"tag={demo_tag(demo_run)}") for word in words]


def curl_command_answers(command: str, server, demo_run: Path) -> None:
    """Run a README curl command against the demo run's server: JSON hits, no error."""
    args = with_demo_filters(
        shlex.split(command.replace(README_PORT, server.base.removeprefix("http://"))), demo_run
    )
    result = subprocess.run(args, cwd=demo_run, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert "error" not in answer and answer["hits"], answer


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_works(command, tmp_path, demo_run, contest_folder, request):
    if "$TUWEN_SAMPLE" in command and not SAMPLE_DATA.is_dir():
        pytest.skip(f"the real sample (TUWEN_SAMPLE) is not at {SAMPLE_DATA}")
    if command.startswith("curl "):
        curl_command_answers(command, request.getfixturevalue("readme_server"), demo_run)
        return
    if "--milvus" in command or " export milvus" in command:
        command = with_milvus(command, request.getfixturevalue("readme_milvus"))
    if " export clip-retrieval" in command:
        command = command.replace("--out results/", f"--out {tmp_path}/")
    if re.match(r"^(\.venv/bin/)?python -m tuwen serve", command):
        serve_command_answers(command, demo_run)
        return
    own = (
        request.getfixturevalue("own_folder")
        if "/path/to/photos" in command or "/path/to/folder" in command
        else None
    )
    args, cwd = runnable(command, tmp_path, demo_run, contest_folder, own)
    python = REPO / ".venv/bin/python"
    if args[0] in {"python", "python3"} or args[0].endswith("/python"):
        args[0] = str(python)
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (
        f"{command}\nran as: {shlex.join(args)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
