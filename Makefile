# tml-twhin developer and user entry points. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
NPROC ?= 2
# Restarts of the worker group after a crash (each resumes from the newest checkpoint).
MAX_RESTARTS ?= 3
SAVE_DIR ?= runs/local
CONFIG ?= configs/local.yaml
SYNTHETIC_DIR ?= data/synthetic
# Passive OpenMP waiting: spinning threads made small CPU boxes 10-40x slower (docs/stack.md).
export OMP_WAIT_POLICY ?= PASSIVE
# Container side: DOCKER=podman works too. Linted by `make lint` with the tools in .venv.
DOCKER ?= docker
IMAGE ?= tml-twhin:latest
IMAGE_CPU ?= tml-twhin:cpu
SHELL_SCRIPTS := entrypoint.sh tools/image-requirements.sh deploy/slurm/train.sbatch .ci/run

.PHONY: help setup run-local data test test-fast lint format docs clean import-kinships \
	run-kinships bench-quality bench bench-relations report

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

setup: $(VENV)/.installed  ## build .venv with the pinned stack (no-op when up to date)

# torchrec goes in with --no-deps: its metadata leaves fbgemm-gpu open and pip would pick a build
# for another torch. requirements.txt doubles as the constraints file so nothing can move a pin.
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check \
		-c requirements.txt -r <(grep -v '^torchrec==' requirements.txt)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps \
		$$(grep '^torchrec==' requirements.txt)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

data: $(SYNTHETIC_DIR)/graph.json  ## generate the synthetic Twitter-like graph (once)

$(SYNTHETIC_DIR)/graph.json: | $(VENV)/.installed
	$(PY) -m tml.projects.twhin.synthetic --out $(SYNTHETIC_DIR) --overwrite

# tml.core.launch is torchrun that checkpoints and exits 0 on SIGTERM and does not retry bad input.
run-local: setup data  ## train configs/local.yaml with torchrun on NPROC ranks into SAVE_DIR
	$(PY) -m tml.core.launch --standalone --nnodes 1 --nproc_per_node $(NPROC) \
		--max_restarts $(MAX_RESTARTS) \
		tml/projects/twhin/run.py --config_yaml_path=$(CONFIG) --save_dir=$(SAVE_DIR)

report: setup  ## plots and an index.html of SAVE_DIR's run into SAVE_DIR/report
	$(PY) -m tml.projects.twhin.report --save_dir=$(SAVE_DIR)

test: setup lint  ## lint, then the whole test suite: unit and multi-process (torchrun) tests
	OMP_NUM_THREADS=1 $(PY) -m pytest -q

test-fast: setup  ## the unit tests only (tests/unit: no torchrun, under a minute)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q tests/unit

lint: setup compose-check  ## ruff, mypy (tml/), hadolint (Dockerfile), shellcheck, compose schema
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint Dockerfile
	$(VENV)/bin/shellcheck $(SHELL_SCRIPTS)

.PHONY: image image-cpu compose-check

image:  ## build the CUDA 13.0 trainer image IMAGE (needs a Docker engine)
	$(DOCKER) build -t $(IMAGE) .

image-cpu:  ## build the CPU-only trainer image IMAGE_CPU
	$(DOCKER) build --build-arg VARIANT=cpu -t $(IMAGE_CPU) .

# The compose-spec schema catches unknown keys and a GPU reservation without capabilities;
# `docker compose config` also resolves variables, where the plugin is installed.
compose-check: setup  ## validate docker-compose.yml against the compose-spec schema
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
	if $(DOCKER) compose version >/dev/null 2>&1; then $(DOCKER) compose config --quiet; fi

KINSHIPS_DIR ?= data/kinships

import-kinships: $(KINSHIPS_DIR)/config.yaml  ## import datasets/kinships into KINSHIPS_DIR (once)

$(KINSHIPS_DIR)/config.yaml: | $(VENV)/.installed
	$(PY) -m tml.projects.twhin.import_kg --out $(KINSHIPS_DIR) --overwrite \
		--train datasets/kinships/train.tsv --valid datasets/kinships/valid.tsv \
		--test datasets/kinships/test.tsv --operator complex_diagonal

run-kinships: setup import-kinships  ## train configs/kinships.yaml (ComplEx) and score the test split
	OMP_NUM_THREADS=1 $(PY) tml/projects/twhin/run.py --config_yaml_path=configs/kinships.yaml \
		--save_dir=runs/kinships
	$(PY) -m tml.projects.twhin.evaluate --save_dir=runs/kinships --split test

bench-quality: setup  ## train every operator on Kinships; table of test MRR, Hits, speed
	$(PY) benchmarks/quality.py

BENCH_ARGS ?=
RELATIONS_ARGS ?=
bench: setup  ## edges/s vs PyTorch-BigGraph (1M entities/5M edges, 1 and 2 ranks), then bench-relations
	$(PY) benchmarks/throughput.py $(BENCH_ARGS)
	$(PY) benchmarks/relations.py $(RELATIONS_ARGS)

bench-relations: setup  ## edges/s of a KG with 4, 100, 1,000 relations (RELATIONS_ARGS="--baseline DIR")
	$(PY) benchmarks/relations.py $(RELATIONS_ARGS)

format: setup  ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:  ## remove the venv, generated data and runs
	rm -rf $(VENV) data/synthetic $(KINSHIPS_DIR) runs .pytest_cache

docs: setup  ## regenerate docs/config-reference.md from the config classes
	$(PY) -m tml.core.config_docs tml.projects.twhin.config:TwhinConfig \
		--update docs/config-reference.md
