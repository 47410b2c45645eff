PY := .venv/bin/python
STACK := $(PY) -m cluster.local.stack
# Ray client settings of the local cluster (token auth, loopback address) for pytest and benchmarks.
RAY_CLIENT_ENV = eval "$$($(STACK) env)"

.PHONY: install run up down status lint test bench

install:
	cluster/local/install.sh

run: install
	$(STACK) run

up: install
	$(STACK) up

down:
	$(STACK) down

status:
	$(STACK) status

lint:
	$(PY) -m ruff check .
	$(PY) -m mypy .

test: install lint
	$(STACK) up --two-dc --no-demo
	$(RAY_CLIENT_ENV) && $(PY) -m pytest -q

bench: install
	$(STACK) up
	$(RAY_CLIENT_ENV) && $(PY) -m benchmarks
