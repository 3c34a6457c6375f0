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
# Images are tagged with the version (pyproject.toml), never only `latest`.
VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE ?= tml-twhin:$(VERSION)
IMAGE_CPU ?= tml-twhin:$(VERSION)-cpu
# OCI labels: the commit, its time (so a rebuild of one commit is labelled alike), the repository.
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
CREATED ?= $(shell git log -1 --format=%cI 2>/dev/null || echo unknown)
SOURCE ?= $(shell git config --get remote.origin.url 2>/dev/null || echo unknown)
IMAGE_ARGS = --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) \
	--build-arg CREATED=$(CREATED) --build-arg SOURCE=$(SOURCE)
SHELL_SCRIPTS := entrypoint.sh tools/image-requirements.sh tools/lock.sh tools/check-image-imports.sh \
	deploy/slurm/train.sbatch .ci/run tools/ensure-postgres.sh
K8S_MANIFESTS := $(wildcard deploy/k8s/*.yaml)

.PHONY: help setup run-local data test test-fast test-resume test-tools lint format docs clean \
	import-kinships run-kinships bench-quality bench bench-relations bench-ranking bench-retrieval \
	bench-versions report lock tune-kinships scaling-doc

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

setup: $(VENV)/.installed  ## build .venv with the pinned stack (no-op when up to date)

# torchrec goes in with --no-deps: its metadata leaves fbgemm-gpu open and pip would pick a build
# for another torch. requirements.txt doubles as the constraints file so nothing can move a pin;
# requirements-dev.txt adds the test, lint and lock tools.
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c requirements.txt \
		-r <(grep -v '^torchrec==' requirements.txt) -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps \
		$$(grep '^torchrec==' requirements.txt)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

data: $(SYNTHETIC_DIR)/graph.json  ## generate the synthetic Twitter-like graph (once)

$(SYNTHETIC_DIR)/graph.json: | $(VENV)/.installed
	$(PY) -m tml.projects.twhin.synthetic --out $(SYNTHETIC_DIR) --overwrite

# tml.core.launch is torchrun that checkpoints and stops on SIGTERM or Ctrl-C (exit 143 / 130) and
# does not retry bad input (exit 2); docs/fault-tolerance.md. Ctrl-C reaches the launcher, which
# forwards it; make waits for the checkpoint, then ends by SIGINT (the shell's $$? is 130).
run-local: setup data  ## train configs/local.yaml with torchrun on NPROC ranks into SAVE_DIR
	$(PY) -m tml.core.launch --standalone --nnodes 1 --nproc_per_node $(NPROC) \
		--max_restarts $(MAX_RESTARTS) \
		tml/projects/twhin/run.py --config_yaml_path=$(CONFIG) --save_dir=$(SAVE_DIR)

report: setup  ## plots and an index.html of SAVE_DIR's run into SAVE_DIR/report
	$(PY) -m tml.projects.twhin.report --save_dir=$(SAVE_DIR)

test: setup lint  ## lint, then the unit and multi-process (torchrun) tests, all but test-tools
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m "not tools"

# Kept out of `make test` for its time budget; CI (.ci/run) runs both.
test-tools: setup  ## tune (with PostgreSQL), compiled scoring, the image and deploy-job tests
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m tools

test-fast: setup  ## the unit tests only (tests/unit: no torchrun, under a minute)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q tests/unit

# Every cell of the resume matrix and every interruption kind (`make test` runs a sample).
test-resume: setup  ## the full resume matrix (docs/fault-tolerance.md) and interruption tests
	TML_RESUME_MATRIX=all OMP_NUM_THREADS=1 $(PY) -m pytest -q \
		tests/distributed/test_resume_matrix.py tests/distributed/test_fault_tolerance.py

# hadolint reads .hadolint.yaml: the OCI labels are required in every image.
lint: setup compose-check k8s-check  ## ruff, mypy (tml/), hadolint, shellcheck, compose and k8s schemas
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint Dockerfile
	$(VENV)/bin/shellcheck $(SHELL_SCRIPTS)

.PHONY: image image-cpu compose-check k8s-check k8s-schemas

image:  ## build the CUDA 13.0 trainer image IMAGE (needs a Docker engine)
	$(DOCKER) build $(IMAGE_ARGS) -t $(IMAGE) .

image-cpu:  ## build the CPU-only trainer image IMAGE_CPU
	$(DOCKER) build $(IMAGE_ARGS) --build-arg VARIANT=cpu -t $(IMAGE_CPU) .

# The image installs locks/<variant>.txt with --require-hashes. TORCH_CPU_FIND_LINKS=DIR takes
# the CPU torch wheel from a folder where PyTorch's CPU index cannot be reached.
lock: setup  ## regenerate the image's hash-locked requirements (locks/) from requirements.txt
	UV=$(VENV)/bin/uv tools/lock.sh locks

# Strict schemas (unknown fields rejected) of the Kubeflow CRDs, vendored in deploy/k8s/schemas.
k8s-check: setup  ## validate deploy/k8s against the PyTorchJob, TrainJob, TrainingRuntime CRDs
	$(PY) tools/k8s_schemas.py check $(K8S_MANIFESTS)

TRAINING_OPERATOR_CRDS ?= https://raw.githubusercontent.com/kubeflow/training-operator/v1.9.0/manifests/base/crds
TRAINER_CRDS ?= https://raw.githubusercontent.com/kubeflow/trainer/v2.3.0/manifests/base/crds
k8s-schemas: setup  ## re-vendor deploy/k8s/schemas from the Kubeflow CRDs (downloads them)
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT \
	&& curl -fsSL -o $$tmp/kubeflow.org_pytorchjobs.yaml \
		$(TRAINING_OPERATOR_CRDS)/kubeflow.org_pytorchjobs.yaml \
	&& for kind in trainjobs trainingruntimes; do curl -fsSL \
		-o $$tmp/trainer.kubeflow.org_$$kind.yaml $(TRAINER_CRDS)/trainer.kubeflow.org_$$kind.yaml; \
	done \
	&& $(PY) tools/k8s_schemas.py extract $$tmp/*.yaml --out deploy/k8s/schemas

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

# 30 trials of the default search space around configs/kinships.yaml, two at a time (one thread
# each), no new trial after 18 min; docs/tuning.md has the measured figures.
TUNE_DIR ?= runs/tune-kinships
TUNE_ARGS ?= --trials 30 --timeout 1080 --jobs 2 --eval_every_epochs 5 --seed 0
tune-kinships: setup import-kinships  ## tune configs/kinships.yaml for validation MRR -> TUNE_DIR/best.yaml
	$(PY) -m tml.projects.twhin.tune --config_yaml_path=configs/kinships.yaml \
		--save_dir=$(TUNE_DIR) $(TUNE_ARGS)

bench-quality: setup  ## train every operator on Kinships; table of test MRR, Hits, speed
	$(PY) benchmarks/quality.py

BENCH_ARGS ?=
RELATIONS_ARGS ?=
bench: setup  ## edges/s vs PyTorch-BigGraph (1M entities/5M edges, 1 and 2 ranks; BENCH_ARGS), then bench-relations
	$(PY) benchmarks/throughput.py $(BENCH_ARGS)
	$(PY) benchmarks/relations.py $(RELATIONS_ARGS)

bench-relations: setup  ## edges/s of a KG with 4, 100, 1,000 relations (RELATIONS_ARGS="--baseline DIR")
	$(PY) benchmarks/relations.py $(RELATIONS_ARGS)

bench-ranking: setup  ## each rank's peak RSS ranking a 4M x 64 table on 2 ranks, ranking off vs on
	$(PY) benchmarks/ranking_memory.py $(BENCH_ARGS)

bench-retrieval: setup  ## neighbors on a 1M x 64 table: index build, query time, peak RSS
	$(PY) benchmarks/retrieval.py $(BENCH_ARGS)

# Plans on CPU in seconds: TorchRec's planner needs no GPU for a CUDA topology.
scaling-doc: setup  ## docs/scaling.md: TorchRec's plans, memory, bytes and step time on 8-256 H100s
	$(PY) benchmarks/scaling_plan.py --update docs/scaling.md

bench-versions: setup  ## v2 = v1 + 10 % entities: warm start vs from scratch, drift, placement
	nice -n 10 $(PY) benchmarks/graph_versions.py $(BENCH_ARGS)

format: setup  ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:  ## remove the venv, generated data and runs
	rm -rf $(VENV) data/synthetic $(KINSHIPS_DIR) runs .pytest_cache

docs: setup  ## regenerate docs/config-reference.md and the resume matrix (docs/fault-tolerance.md)
	$(PY) -m tml.core.config_docs tml.projects.twhin.config:TwhinConfig \
		--update docs/config-reference.md
	$(PY) -m tests.resume_cells --update docs/fault-tolerance.md
