# warmcast: `make run` runs the demo on the embedded broker, `make test` runs every test.
# Both create .venv and install the project into it on first use.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NATIVE := $(VENV)/.native

.PHONY: run worker test lint bench clean schemas native

$(STAMP): pyproject.toml setup.py
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "warmcast needs $(PYTHON) on PATH (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP) $(NATIVE)

# The engine's hot path is compiled (engine/native.py); after an engine module changes it
# is compiled again, else the engine runs as pure Python until it is.
$(NATIVE): $(STAMP) $(wildcard engine/*.py)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(NATIVE)

native:
	@rm -f $(NATIVE)
	@$(MAKE) --no-print-directory $(NATIVE)

run: $(NATIVE)
	$(BIN)/warmcast demo $(ARGS)

worker: $(NATIVE)
	$(BIN)/warmcast run $(ARGS)

# Every test on the embedded broker, then the integration tests (those that use a broker)
# on Apache Kafka when Java and Maven are there (TEST_BROKERS=tansu: the first run only).
TEST_BROKERS ?= tansu kafka
test: $(NATIVE)
	$(BIN)/pytest $(PYTEST_ARGS)
	@if [ -n "$$KAFKA_BOOTSTRAP_SERVERS" ] || ! echo "$(TEST_BROKERS)" | grep -qw kafka; then :; \
	elif command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1; then \
	  echo "== the integration tests again, on Apache Kafka"; \
	  WARMCAST_TEST_BROKER=kafka $(BIN)/pytest -m integration $(PYTEST_ARGS); \
	else \
	  echo "== no Java or Maven: the integration tests ran on the embedded broker only"; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(NATIVE)
	$(BIN)/warmcast bench $(ARGS)

schemas: $(STAMP)
	$(BIN)/warmcast schemas export

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info *.so engine/*.so engine/native.json
