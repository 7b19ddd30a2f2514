# `make run` and `make test` are the only commands a fresh machine needs: both create .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= configs/local.yaml
ARGS ?=
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: install run test test-fast ui bench cleanup clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)  ## the capacity check on the embedded default (bundled MLflow model, local platform)
	$(BIN)/nightcap run $(CONFIG) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider $(ARGS)

test-fast: $(STAMP)  ## only the millisecond tests (pure logic, config, manifests)
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow" -n 2 $(ARGS)

ui: $(STAMP)  ## the Prefect UI over the runs `make run` recorded
	$(BIN)/prefect server start --host 127.0.0.1 --port 4200

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

cleanup: $(STAMP)  ## stop what dead runs left behind
	$(BIN)/nightcap cleanup

clean:
	rm -rf $(VENV) .prefect .nightcap reports
