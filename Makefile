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

# uv installs the same packages as pip in about a third of the time (23 s against 52 s here, cold cache against
# warm); pip installs them wherever uv cannot (no network to its index, a platform it has no wheel for).
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	{ $(BIN)/pip install --quiet uv && $(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[dev]'; } || \
	{ echo "uv could not install; installing with pip"; $(BIN)/pip install --upgrade --quiet pip && $(BIN)/pip install --quiet -e '.[dev]'; }
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)  ## the capacity check on the embedded default (bundled MLflow model, local platform)
	$(BIN)/nightcap run $(CONFIG) $(ARGS)

# Two parts: everything that does not assert a measured figure on 3 processes (much of it waits on servers and
# windows: 268 s against 345 s on 2, same tests, 2 cores), then the `quiet` tests (rates,
# latencies, efficiencies) alone, so no other test moves their figures. A part that collects nothing (exit 5,
# e.g. ARGS names one file) is not a failure; make fails when either part fails.
test: $(STAMP)
	@rc=0; \
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -q -p no:cacheprovider -m "not quiet" -n 3 --dist worksteal $(ARGS) || rc=$$?; \
	[ $$rc -eq 5 ] && rc=0; \
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -q -p no:cacheprovider -m quiet $(ARGS) || { q=$$?; [ $$q -eq 5 ] || rc=$$q; }; \
	exit $$rc

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
