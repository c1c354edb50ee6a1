# Trailer genre timelines: every stage is a target; `make help` lists them.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.8
CONFIG ?= configs/pipeline.yaml
STAMP := $(VENV)/.installed
TRAILERS := $(BIN)/trailers
MLFLOW_PORT ?= 5000
# The store `trailers train` logs to by default (tracking.tracking_uri: null, no MLFLOW_TRACKING_URI).
MLFLOW_STORE := sqlite:///$(abspath mlflow.db)
# dvc runs each stage's `trailers ...` command: it must find the venv's scripts first.
export PATH := $(abspath $(BIN)):$(PATH)

.DEFAULT_GOAL := help
.PHONY: help setup lock browser test test-fast coverage screenshots lint docs docs-build run run-weak label-fraction exp synth decode validate train evaluate ui bench-decode bench-model bench-input clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# Byte-compiled at install: uv does not compile by default, and where PYTHONDONTWRITEBYTECODE is
# set Python never caches bytecode, so every decoder process would compile numpy & co. again.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync -q --compile-bytecode --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	touch $@

setup: $(STAMP) ## Create .venv from the lock file (runs automatically when needed)

lock: ## Re-resolve requirements.lock after editing pyproject.toml
	$(BIN)/uv pip compile -q pyproject.toml --extra dev --python-version 3.11 -o requirements.lock \
		--custom-compile-command "make lock"

# The viewer tests drive Debian's chromium through Playwright, so nothing is downloaded at test time.
# Under CI (CI=true) a browser that cannot be installed fails the run: the page must be tested.
browser: ## Install chromium for the viewer tests when missing (apt-get, as root); else they skip
	@command -v chromium >/dev/null && exit 0; \
	if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "browser: installing Debian's chromium for the viewer tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
			&& exit 0; \
		echo "browser: apt-get could not install chromium: the viewer tests will skip"; \
	else \
		echo "browser: no chromium, and no apt-get run as root to install it: the viewer tests will skip"; \
	fi; \
	[ "$$CI" != true ] || { echo "browser: CI=true needs chromium for the viewer tests"; exit 1; }

# Both use every core (pytest-xdist; one worker per core): tests that share a Dask cluster, an
# MLflow server or the browser run in one worker (xdist_group), the corpora are built once per run.
TEST_WORKERS ?= auto
PYTEST = $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup

test: $(STAMP) browser ## Run the test suite (smoke config; minutes on 2 cores, tests/README.md)
	$(PYTEST)

test-fast: $(STAMP) browser ## Run the tests not marked slow (about a minute), for development
	$(PYTEST) -m "not slow"

coverage: $(STAMP) browser ## Line coverage of pipeline/ over the whole suite, stage processes included (slower than make test)
	$(PYTEST) --cov --cov-report=term-missing:skip-covered

screenshots: $(STAMP) browser ## Retake docs/images/: the manual's home and the MLflow UI, as their tests see them (minutes)
	TRAILERS_SCREENSHOTS=1 $(BIN)/python -m pytest -n 0 -p no:randomly \
		tests/test_docs.py::test_manual_builds_strictly_and_its_home_renders \
		tests/test_train_tracking.py::test_the_ui_opens_the_experiment_on_its_training_runs_with_their_evaluations

lint: $(STAMP) ## ruff check + format check
	$(BIN)/ruff check pipeline tests benchmarks docs
	$(BIN)/ruff format --check pipeline tests benchmarks docs

# The manual (mkdocs.yml, docs/). Material's start-up notice about MkDocs 2 is not ours to print.
DOCS_PORT ?= 8000
MKDOCS := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs

docs: $(STAMP) ## Serve the manual at http://127.0.0.1:8000 (DOCS_PORT=...), rebuilt as docs/ changes
	$(MKDOCS) serve --strict --dev-addr 127.0.0.1:$(DOCS_PORT)

docs-build: $(STAMP) ## Build the manual into site/ with --strict: a broken link or missing page fails
	$(MKDOCS) build --strict

run: $(STAMP) ## Run the whole pipeline on the built-in demo corpus (dvc repro), then sum it up
	$(BIN)/dvc repro
	@$(BIN)/python -m pipeline.views.summary --config configs/pipeline.yaml

WEAK_CONFIG := configs/weak.yaml
# configs/weak.yaml's paths.data_dir
WEAK_DATA := data/weak
run-weak: $(STAMP) ## The weakly labelled demo end to end: train split labelled at trailer level only, val/test by segment (configs/weak.yaml; every stage reruns)
	$(TRAILERS) synth --config $(WEAK_CONFIG)
	$(BIN)/python docs/bring_your_own/weaken.py --config $(WEAK_CONFIG)
	$(TRAILERS) decode --config $(WEAK_CONFIG)
	$(TRAILERS) validate --config $(WEAK_CONFIG)
	$(TRAILERS) train --config $(WEAK_CONFIG) --model classifier
	$(TRAILERS) train --config $(WEAK_CONFIG) --model baseline
	$(TRAILERS) evaluate --config $(WEAK_CONFIG)

# The fractions of train trailers that keep their segments; SET="train.epochs=6" trains each
# run for less (docs/label_fraction.md's caption says which budget it was made with).
FRACTIONS ?= 0 0.1 0.25 0.5 1
label-fraction: $(STAMP) ## How many trailers to label by hand: train at each FRACTIONS of segment-labelled train trailers (configs/weak.yaml), writes docs/label_fraction.md + .png (hours; resumes)
	test -f $(WEAK_DATA)/annotations.segments.csv || $(TRAILERS) synth --config $(WEAK_CONFIG)
	$(BIN)/python docs/label_fraction.py --config $(WEAK_CONFIG) --fractions $(FRACTIONS) \
		$(foreach param,$(SET),--set $(param))

exp: $(STAMP) ## A DVC experiment with other params: make exp SET="train.epochs=3 train.learning_rate=0.001"
	@test -n "$(SET)" || { echo 'usage: make exp SET="train.epochs=3 ..." (keys of configs/pipeline.yaml)'; exit 2; }
	$(BIN)/dvc exp run $(foreach param,$(SET),-S configs/pipeline.yaml:$(param))
	$(BIN)/dvc exp show --md --only-changed

synth: $(STAMP) ## Generate the demo trailer corpus (data/videos, annotations.csv, splits.csv)
	$(TRAILERS) synth --config $(CONFIG)

decode: $(STAMP) ## Decode trailers into channels_first .npy shards (data/shards)
	$(TRAILERS) decode --config $(CONFIG)

validate: $(STAMP) ## Check the shards with TFDV (integrity, schema, drift); fails on any error
	$(TRAILERS) validate --config $(CONFIG)

train: $(STAMP) ## Train the ConvLSTM classifier and the per-frame baseline (models/, MLflow runs)
	$(TRAILERS) train --config $(CONFIG) --model classifier
	$(TRAILERS) train --config $(CONFIG) --model baseline

evaluate: $(STAMP) ## Score both models per genre on the test split (metrics/evaluate.json, outputs/evaluate/)
	$(TRAILERS) evaluate --config $(CONFIG)

ui: $(STAMP) ## Browse the MLflow runs: the UI on the project's store at 127.0.0.1 (port MLFLOW_PORT=5000)
	@TF_CPP_MIN_LOG_LEVEL=3 MLFLOW_LOGGING_LEVEL=WARNING MLFLOW_TRACKING_URI=$(MLFLOW_STORE) $(BIN)/python -c 'from pipeline.core.config import load_config; \
		from pipeline.infra.tracking import experiment_page; \
		print("MLflow UI:", experiment_page(load_config("$(CONFIG)"), "http://127.0.0.1:$(MLFLOW_PORT)"))'
	@echo "(store $(MLFLOW_STORE); Ctrl-C stops it)"
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow server \
		--backend-store-uri $(MLFLOW_STORE) --artifacts-destination $(abspath mlruns) \
		--host 127.0.0.1 --port $(MLFLOW_PORT) --workers 1

.PHONY: predict bench-predict
predict: $(STAMP) ## Genre timelines of any videos: make predict VIDEO="a.mp4 b.mkv" or CATALOGUE=dir|list.csv [MODEL=path|runs:/...] (outputs/predict/)
	@test -n "$(VIDEO)$(CATALOGUE)" || { echo 'usage: make predict VIDEO="a.mp4 ..." | CATALOGUE=dir|list.csv [MODEL=path|uri]'; exit 2; }
	$(TRAILERS) predict --config $(CONFIG) $(if $(MODEL),--model $(MODEL)) $(if $(CATALOGUE),--catalogue "$(CATALOGUE)") $(VIDEO)

bench-decode: $(STAMP) ## Decode speed vs the ffmpeg CLI and PyAV, and 2 workers vs 1
	$(BIN)/python benchmarks/decode.py

bench-model: $(STAMP) ## Classifier train step vs keras ConvLSTM2D (channels_first and channels_last)
	$(BIN)/python benchmarks/model.py

bench-input: $(STAMP) ## tf.data input pipeline vs raw memory-mapped reads and the train step
	$(BIN)/python benchmarks/input.py

bench-predict: $(STAMP) ## Predict's memory 1x vs 10x, 30x video, speed vs decode-all + one model.predict (3 rounds)
	$(BIN)/python benchmarks/predict.py --copies 10 30

clean: ## Remove generated data, outputs and models; keeps git-tracked files, .venv and DVC's cache
	git clean -fdX data outputs models mlruns
