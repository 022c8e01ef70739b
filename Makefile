# Two commands: `make run` and `make test`. Both first make sure the project's
# virtualenv exists. It lives outside the clone, in a cache keyed by the lock
# file's hash, so a fresh clone (CI) reuses the 6 GB of torch already installed.
SHELL := /bin/bash
PYTHON ?= python3.11
LOCK := requirements.lock
TUWEN_VENV_CACHE ?= $(HOME)/.cache/tuwen/venvs
VENV := $(TUWEN_VENV_CACHE)/$(shell sha256sum $(LOCK) | cut -c1-16)
READY := $(VENV)/.tuwen-ready
CLONE_READY := .venv/.tuwen-clone-ready
CORES ?= all
PYTEST_ARGS ?=

.PHONY: env run test test-slow test-cluster lint bench bench-scale bench-encode bench-backends bench-ocr bench-serve bench-index check-gpu clean docs

env: $(CLONE_READY)

# No prerequisite on purpose: the folder name is the lock file's hash, so a changed lock
# gets a new folder, while a fresh clone (new file times, same content) reuses this one.
$(READY):
	rm -rf "$(VENV)"
	$(PYTHON) -m venv "$(VENV)"
	"$(VENV)/bin/pip" install --quiet --disable-pip-version-check -r $(LOCK)
	touch "$(READY)"

# The clone's own environment, .venv: a small venv that sees the cached one's packages
# (one .pth line) and has this clone's `tuwen` installed editable. The 6 GB stay shared,
# while two clones (CI beside a working copy) never import each other's tuwen. The cached
# venv's commands (snakemake, pytest, ruff, ...) are copied with this venv's python.
$(CLONE_READY): $(READY) pyproject.toml
	rm -rf .venv
	$(PYTHON) -m venv --without-pip .venv
	echo "import site; site.addsitedir('$$("$(VENV)/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')')" \
		> "$$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/tuwen-cache.pth"
	for tool in "$(VENV)"/bin/*; do \
		name=$${tool##*/}; [ -e ".venv/bin/$$name" ] && continue; \
		if [ "$$(head -c 2 "$$tool")" = "#!" ]; then \
			sed "1s|^#!.*python.*$$|#!$(CURDIR)/.venv/bin/python|" "$$tool" > ".venv/bin/$$name"; \
			chmod +x ".venv/bin/$$name"; \
		else ln -s "$$tool" ".venv/bin/$$name"; fi; \
	done
	.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(CLONE_READY)

run: $(CLONE_READY)
	.venv/bin/snakemake --cores $(CORES) --workflow-profile profiles/default

test: $(CLONE_READY)
	.venv/bin/python -m pytest $(PYTEST_ARGS)

# Long workflow runs (kill -9 and resume, the real sample): CI runs them after `make test`.
test-slow: $(CLONE_READY)
	.venv/bin/python -m pytest -m "slow and not cluster" $(PYTEST_ARGS)

# The SLURM test: needs root; starts (and afterwards stops) the harness in ../shared/tools/slurm.
test-cluster: $(CLONE_READY)
	.venv/bin/python -m pytest -m cluster $(PYTEST_ARGS)

lint: $(CLONE_READY)
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/snakefmt --check Snakefile rules && .venv/bin/snakemake --lint && .venv/bin/mypy

bench: $(CLONE_READY)
	.venv/bin/python -m bench.train_lock_image

# The workflow against a bare one-process script at contest size (see bench/README.md);
# smaller: make bench-scale BENCH_ARGS="--gallery 5000 --queries 500"
BENCH_ARGS ?=
bench-scale: $(CLONE_READY)
	.venv/bin/python -m bench.scale $(BENCH_ARGS)

# End-to-end encoding against the forward pass alone: BENCH_ARGS="--arch ViT-H-14 --device cuda"
bench-encode: $(CLONE_READY)
	.venv/bin/python -m bench.encode $(BENCH_ARGS)

# One text and one image query per model, torch eager against ONNX Runtime fp32 and int8.
bench-backends: $(CLONE_READY)
	.venv/bin/python -m bench.query_backends $(BENCH_ARGS)

# PP-OCR images/s on the sample's photos against CLIP encoding of the same images.
bench-ocr: $(CLONE_READY)
	.venv/bin/python -m bench.ocr $(BENCH_ARGS)

# Latency of `python -m tuwen serve` (1 and 8 clients) beside the one-shot search, on the demo
# and on a 50,000-image gallery (built once under runs/bench-serve).
bench-serve: $(CLONE_READY)
	.venv/bin/python -m bench.serve $(BENCH_ARGS)

# The approximate index against exact search, usearch and Milvus Lite: synthetic galleries of
# 50,000, 1M and 10M items (about 26 GB of shards under runs/bench-index, kept), then the
# contest-shaped 50,000-image run of bench-serve through the workflow's index stage; at 10M,
# the served index's recall and latency at each nprobe too.
# One size: .venv/bin/python -m bench.index --items 1000000
bench-index: $(CLONE_READY)
	rm -f runs/bench-index.jsonl
	.venv/bin/python -m bench.index --items 50000 --usearch --milvus --report runs/bench-index.jsonl
	.venv/bin/python -m bench.index --items 1000000 --usearch --report runs/bench-index.jsonl
	.venv/bin/python -m bench.index --items 10000000 --nprobe-sweep 64,96,128,192,256 --report runs/bench-index.jsonl
	.venv/bin/python -m bench.index --contest-run --report runs/bench-index.jsonl
	.venv/bin/python -m bench.index_table runs/bench-index.jsonl

# Every GPU path in one prepared command (<= 8 minutes on one H100/H200; see bench/check_gpu.py).
# Without CUDA it checks its inputs, plans its runs, says so and exits 0.
check-gpu: $(CLONE_READY)
	.venv/bin/python -m bench.check_gpu $(BENCH_ARGS)

clean:
	rm -rf results .snakemake

# docs/rulegraph.png: the rule graph of a small finished run with two models, training,
# fusion and OCR on (made under runs/docs, then drawn by Graphviz's dot).
DOCS_RUN := runs/docs
DOCS_CONFIG := demo='{train_pairs: 60, queries: 20}' train='{epochs: 2}' \
	'models=[tuwen-tiny-rn, tuwen-tiny]' 'fusion={enabled: true}'
docs: $(CLONE_READY)
	.venv/bin/snakemake --cores $(CORES) --directory $(DOCS_RUN) --config $(DOCS_CONFIG) --quiet
	.venv/bin/snakemake --directory $(DOCS_RUN) --config $(DOCS_CONFIG) --rulegraph | dot -Tpng > docs/rulegraph.png
