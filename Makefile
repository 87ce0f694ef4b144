# streamfill: `make demo` runs the main job, `make test` runs the tests.
# Needs only Python 3.11+ and access to PyPI: uv is bootstrapped into .tools/ when missing.

PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := .tools/bin/uv
endif

PYTEST_ARGS ?=

.PHONY: install test demo bench stress lint typecheck validate-deploy clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv

.venv/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen
	touch $@

install: .venv/.installed

test: install
	$(UV) run --frozen pytest $(PYTEST_ARGS)

demo: install
	$(UV) run --frozen streamfill demo $(DEMO_ARGS)

bench: install
	$(UV) run --frozen python bench/bench_streams.py
	$(UV) run --frozen python bench/bench_car.py
	$(UV) run --frozen python bench/bench_backfill.py
	$(UV) run --frozen python bench/bench_repos.py
	$(UV) run --frozen python bench/bench_indexer.py
	$(UV) run --frozen python bench/bench_priority.py
	$(UV) run --frozen python bench/bench_cluster.py
	$(UV) run --frozen python bench/bench_migrate.py
	$(UV) run --frozen python bench/bench_devnet.py
	$(UV) run --frozen python bench/bench_demo.py
	$(UV) run --frozen python bench/bench_replicas.py

# The chaos demo STRESS_K times with random seeds: prints `N/K exact` and the failing seeds (not
# part of `make test`; docs/testing.md). STRESS_PARALLEL runs at a time, STRESS_ARGS for the demo.
STRESS_K ?= 10
STRESS_PARALLEL ?= 1
stress: install
	$(UV) run --frozen python tools/stress.py --runs $(STRESS_K) --parallel $(STRESS_PARALLEL)

lint: install
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

# mypy --strict: the packages, tests/ and bench/ (pyproject's [tool.mypy]), then the scripts.
typecheck: install
	$(UV) run --frozen mypy
	$(UV) run --frozen mypy --strict $(DEPLOY_CHECK) tools/stress.py

# compose/ and compose/k8s/ offline: schemas, references, settings; and `kubectl kustomize`
# must render what the Python loader reads (the test suite runs the same checks without kubectl).
DEPLOY_CHECK := compose/validate.py compose/deploy_settings.py compose/deploy_k8s.py compose/deploy_compose.py
validate-deploy: install
	$(UV) run --frozen python compose/validate.py --kubectl

clean:
	rm -rf .venv .tools .pytest_cache .hypothesis
