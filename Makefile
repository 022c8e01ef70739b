# Two commands: `make run` and `make test`. Both first make sure the project's
# virtualenv exists. It lives outside the clone, in a cache keyed by the lock
# file's hash, so a fresh clone (CI) reuses the 6 GB of torch already installed.
SHELL := /bin/bash
PYTHON ?= python3.11
LOCK := requirements.lock
TUWEN_VENV_CACHE ?= $(HOME)/.cache/tuwen/venvs
VENV := $(TUWEN_VENV_CACHE)/$(shell sha256sum $(LOCK) | cut -c1-16)
READY := $(VENV)/.tuwen-ready
CORES ?= all
PYTEST_ARGS ?=

.PHONY: env run test test-slow test-cluster lint bench bench-scale bench-encode clean

env: .venv

# No prerequisite on purpose: the folder name is the lock file's hash, so a changed lock
# gets a new folder, while a fresh clone (new file times, same content) reuses this one.
$(READY):
	rm -rf "$(VENV)"
	$(PYTHON) -m venv "$(VENV)"
	"$(VENV)/bin/pip" install --quiet --disable-pip-version-check -r $(LOCK)
	touch "$(READY)"

.venv: $(READY)
	ln -sfn "$(VENV)" .venv

run: .venv
	.venv/bin/snakemake --cores $(CORES) --workflow-profile profiles/default

test: .venv
	.venv/bin/python -m pytest $(PYTEST_ARGS)

# Long workflow runs (kill -9 and resume, the real sample): CI runs them after `make test`.
test-slow: .venv
	.venv/bin/python -m pytest -m "slow and not cluster" $(PYTEST_ARGS)

# The SLURM test: needs root; starts (and afterwards stops) the harness in ../shared/tools/slurm.
test-cluster: .venv
	.venv/bin/python -m pytest -m cluster $(PYTEST_ARGS)

lint: .venv
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/snakemake --lint

bench: .venv
	.venv/bin/python -m bench.train_lock_image

# The workflow against a bare one-process script at contest size (see bench/README.md);
# smaller: make bench-scale BENCH_ARGS="--gallery 5000 --queries 500"
BENCH_ARGS ?=
bench-scale: .venv
	.venv/bin/python -m bench.scale $(BENCH_ARGS)

# End-to-end encoding against the forward pass alone: BENCH_ARGS="--arch ViT-H-14 --device cuda"
bench-encode: .venv
	.venv/bin/python -m bench.encode $(BENCH_ARGS)

clean:
	rm -rf results .snakemake
