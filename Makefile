# Two commands: `make demo` and `make test`. Each sets itself up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test test-fast lint bench setup prometheus valgrind clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

setup: $(STAMP)

prometheus:
	@{ command -v promtool && command -v amtool; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager >/dev/null; \
	  else echo "prometheus/promtool/amtool missing: run 'sudo apt-get install -y prometheus prometheus-alertmanager'" >&2; fi; }

# B6 counts instructions under callgrind and builds its client-request marks with gcc.
valgrind:
	@{ command -v valgrind && command -v gcc; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends valgrind gcc libc6-dev >/dev/null; \
	  elif [ "$$CI" = true ]; then echo "valgrind/gcc missing: CI needs them for b6 (apt-get install -y valgrind gcc)" >&2; exit 1; \
	  else echo "valgrind/gcc missing: b6 will not count instructions; run 'sudo apt-get install -y valgrind gcc'" >&2; fi; }

demo: $(STAMP)
	$(VENV)/bin/cycles-otel demo

test: $(STAMP) prometheus valgrind
	$(PY) -m pytest -q

# The quick loop: every test not marked slow (real Prometheus runs, child processes, long workloads).
test-fast: $(STAMP) prometheus
	$(PY) -m pytest -q -m "not slow"

# mypy reads its files (cycles_otel, tests, benchmarks, grafana) from pyproject.toml.
lint: $(STAMP)
	$(VENV)/bin/ruff check cycles_otel tests benchmarks grafana
	$(VENV)/bin/mypy --strict

bench: $(STAMP) valgrind
	$(PY) -m benchmarks.yardstick
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info
