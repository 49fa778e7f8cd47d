# Docflow — every target a user needs; `make run` and `make test` work on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# The labelled corpus and dev scans live beside the checkout; override with DOCFLOW_DATA_DIR.
DOCFLOW_DATA_DIR ?= $(abspath ../shared/data)
export DOCFLOW_DATA_DIR
SAMPLES_DIR ?= $(VENV)/samples
MODEL_DIR := functions/docflow/default_model
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# prometheus + prometheus-node-exporter: the live check of the Grafana dashboard (tests/e2e/test_prometheus.py);
# chromium + chromium-driver: the review page driven in a real browser (tests/e2e/test_review_page.py)
APT_PACKAGES := tesseract-ocr tesseract-ocr-eng tesseract-ocr-rus tesseract-ocr-osd fonts-dejavu-core fonts-liberation prometheus prometheus-node-exporter chromium chromium-driver

CDK_BIN := infra_cdk/node_modules/.bin
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1

.PHONY: help install system-deps model samples run test test-unit lint typecheck bench clean mlflow-ui \
	layers synth localstack-install localstack-up localstack-down deploy-local

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

system-deps: ## Debian packages: Tesseract with English and Russian, a font for the samples, Prometheus (tests)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "Installing $$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# What a first `make test` takes on disk: .venv 2.9 GB, layers, LocalStack's runtime and the tests' temporary files.
MIN_FREE_GB ?= 6

$(BIN)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: set PYTHON=python3.x (>= 3.11)"; exit 1; }
	@[ -x $(BIN)/python ] || free=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); \
	if [ -n "$$free" ] && [ "$$free" -lt $(MIN_FREE_GB) ]; then \
		echo "Only $$free GB free on $$(df -P . | awk 'NR==2 {print $$6}'): installing needs about $(MIN_FREE_GB) GB (.venv, layers, LocalStack, test files); free some space, or set MIN_FREE_GB=0 to try anyway"; exit 1; \
	fi
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0  # first: the CPU build, before anything that wants torch pulls another
	$(BIN)/pip install -q -e '.[training,sagemaker,dev,infra]'
	touch $@

$(CDK_BIN)/cdk: infra_cdk/package.json infra_cdk/package-lock.json
	cd infra_cdk && npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: system-deps $(BIN)/.installed $(CDK_BIN)/cdk ## Set up everything: apt packages, .venv, CDK CLI

# The text model from the corpus, and its scan head from the real labelled scans (rvl_dev) where they are.
$(MODEL_DIR)/model.onnx: $(BIN)/.installed $(wildcard training/docflow_training/*.py) functions/docflow/domain/text.py functions/docflow/domain/classifier.py functions/docflow/domain/layout.py functions/docflow/domain/scan_head.py functions/docflow/domain/extraction.py
	@[ -d "$(DOCFLOW_DATA_DIR)/tobacco3482" ] || { echo "Corpus not found at $(DOCFLOW_DATA_DIR)/tobacco3482: set DOCFLOW_DATA_DIR"; exit 1; }
	$(BIN)/docflow train --no-track --data "$(DOCFLOW_DATA_DIR)/tobacco3482" --out $(MODEL_DIR) \
		$$([ -d "$(DOCFLOW_DATA_DIR)/rvl_dev" ] && echo --scans "$(DOCFLOW_DATA_DIR)/rvl_dev" || echo "Real scans not found at $(DOCFLOW_DATA_DIR)/rvl_dev: no scan head" >&2)

model: install $(MODEL_DIR)/model.onnx ## Train the default model from the corpus (once)

samples: install ## Make the sample documents `make run` processes
	$(BIN)/docflow samples $(SAMPLES_DIR)

run: model samples ## Set up, then classify the sample documents and print the results
	DOCFLOW_HOME=$${DOCFLOW_HOME:-$(VENV)/run-home} $(BIN)/docflow process $(SAMPLES_DIR)

test: model layers localstack-install ## Set up, then lint, typecheck and run every test (unit … e2e incl. LocalStack)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	DOCFLOW_ARTIFACTS_DIR=$${DOCFLOW_ARTIFACTS_DIR:-$(CURDIR)/test-artifacts} $(BIN)/pytest -q  # the review page's screenshot lands there

test-unit: install ## Fast tests only (no network)
	$(BIN)/pytest -q tests/unit

lint: install ## ruff lint + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install ## mypy
	$(BIN)/mypy

mlflow-ui: install ## MLflow UI (runs, models, registry) for DOCFLOW_HOME on http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri "sqlite:///$$(realpath -m $${DOCFLOW_HOME:-$$HOME/.docflow})/mlflow.db" --default-artifact-root "$$(realpath -m $${DOCFLOW_HOME:-$$HOME/.docflow})/mlruns" --host 127.0.0.1 --port 5000

bench: model ## Benchmarks (OCR, throughput, latency, cold starts, faults, big PDF, AWS cost): a table + bench/results/bench.json
	$(BIN)/python bench/run_all.py

layers: install ## Build the Lambda layers from manylinux wheels (no Docker)
	$(BIN)/python layers/build.py

synth: model layers ## cdk synth: the CloudFormation template and assets into cdk.out/
	$(CDK_BIN)/cdk synth --quiet

localstack-install: install ## Install LocalStack's host-mode runtime (no Docker) under .localstack/
	bash localstack/install.sh

localstack-up: localstack-install ## Start LocalStack on 127.0.0.1:4566
	bash localstack/start.sh

localstack-down: ## Stop LocalStack and the functions it started
	bash localstack/stop.sh

deploy-local: model localstack-up ## Deploy the CDK stack to LocalStack; outputs in cdk-outputs.json
	bash localstack/deploy.sh

clean: ## Remove the venv and generated files
	rm -rf $(VENV) $(MODEL_DIR) layers/build cdk.out .localstack infra_cdk/node_modules .pytest_cache .mypy_cache .ruff_cache
