# Fresh machine:  make run   (install, check params, then the toy-world pipeline)   |   make test   (install with the eval extra, then the tests)
# GPU users: make run TORCH_INDEX=https://download.pytorch.org/whl/cu126   (any CUDA build of torch 2.13.0)
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
TEST_WORKERS ?= 2
EXTRAS ?= test
BIN := $(VENV)/bin
export DVC_NO_ANALYTICS := 1

.PHONY: install run test test-fast bench mlflow-ui clean

$(BIN)/dcv: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	touch $(BIN)/dcv
	$(if $(findstring eval,$(EXTRAS)),touch $(VENV)/.eval-installed)

# make test also installs the eval extra (lm-evaluation-harness), so that its offline tasks are tested too: on a
# fresh machine in the one install above (EXTRAS, one resolution instead of two), after `make run` by this rule.
$(VENV)/.eval-installed: $(BIN)/dcv
	$(BIN)/pip install -q -e ".[test,eval]"
	touch $@

install: $(BIN)/dcv

# `dcv check` first: DVC removes a stage's outs before the stage can refuse its params.
run: install
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/dcv check
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/dvc repro

test test-fast: EXTRAS = test,eval
test: install $(VENV)/.eval-installed
	PATH=$(abspath $(BIN)):$$PATH HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS)

test-fast: install $(VENV)/.eval-installed
	PATH=$(abspath $(BIN)):$$PATH HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m "not slow"

mlflow-ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(abspath mlflow.db) --host 127.0.0.1 --port 5000

clean:
	rm -rf $(VENV)
