# Two commands do all set-up on a fresh machine with only python3:
#   make demo   — embedded broker + worker + simulators + console + live alert ticker
#   make test   — the whole test suite (what .ci/run runs)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# two stamps: the demo needs only the runtime dependencies; the tests add the [test] extras (Playwright …)
RUNTIME := $(VENV)/.installed-runtime
TESTENV := $(VENV)/.installed-test
# test processes (pytest-xdist); `make test TEST_WORKERS=0` runs the suite in one process. The 15 slowest
# tests are listed at the end of every run, so a slower suite says where its time went.
# Three on the 2-core machine: a third of the suite's time is spent waiting (on workers, brokers, browsers and
# paced feeds). The two assertions that failed under that contention no longer depend on how fast the machine
# is (docs/performance.md, "The test suite's time").
TEST_WORKERS ?= 3

.PHONY: demo test bench venv clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install whenever pyproject.toml changes (the stamp is older than it).
$(RUNTIME): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUNTIME)

$(TESTENV): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(TESTENV) $(RUNTIME)

venv: $(TESTENV)

demo: $(RUNTIME)
	$(BIN)/roadwatch demo

test: $(TESTENV)
	@bash scripts/ensure-chromium.sh
	@bash scripts/ensure-postgresql.sh
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=15

bench: $(RUNTIME)
	$(BIN)/roadwatch bench

clean:
	rm -rf $(VENV) var test-artifacts .pytest_cache
