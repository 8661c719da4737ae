# The door to i24net: `make demo` runs a local network, `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install bytecode system-deps demo test test-quick test-cluster lint bench bench-scale chaos exercises mutants clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@$(MAKE) --no-print-directory system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev]'
	@touch $(STAMP)

# The package's bytecode, written before anything runs (into the ignored __pycache__/):
# where PYTHONDONTWRITEBYTECODE is set, every one of the hundreds of processes a network or a
# test run starts would otherwise compile each module again (0.30 s against 0.20 s for
# 'i24net status', measured). Python recompiles a module whose source is newer.
bytecode: install
	@$(BIN)/python -m compileall -q i24net

# Mosquitto and its clients back the real-broker tests; installed when missing and we are root.
system-deps:
	@if ! command -v mosquitto >/dev/null 2>&1 || ! command -v mosquitto_pub >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing mosquitto and mosquitto-clients"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients >/dev/null; \
	  else \
	    echo "note: mosquitto not found (apt-get install -y mosquitto mosquitto-clients, as root); its tests skip, or fail with CI=true"; \
	  fi; \
	fi
	@if ! command -v nats-server >/dev/null 2>&1 && ! [ -x /usr/sbin/nats-server ]; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing nats-server (the clustered broker)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null; \
	  else \
	    echo "note: nats-server not found (apt-get install -y nats-server, as root); the cluster tests skip, or fail with CI=true"; \
	  fi; \
	fi
	@if ! command -v cc >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1 && ! command -v clang >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing gcc (builds the Mosquitto plugin that binds client ids to accounts)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc >/dev/null; \
	  else \
	    echo "note: no C compiler (apt-get install -y gcc, as root); Mosquitto then runs without client-id binding"; \
	  fi; \
	fi
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium (HTML report test)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi

demo: install bytecode
	$(BIN)/i24net demo

# Four workers (pytest-xdist) on two cores: most tests wait on processes and brokers, so
# four overlap the waits (measured: 2 workers 437 s, 3 workers 339 s, 4 workers 307 s on a
# fresh clone). Tests marked with one xdist_group (the soaks, the NATS cluster, the host
# network, the measurements) run in turn on one worker; conftest starts the long groups
# first. TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 4
test: install bytecode
	$(BIN)/pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadgroup

test-quick: install bytecode
	$(BIN)/pytest -q -x -m "not broker and not slow"

# The full benchmark (several minutes): baseline and i24net side by side in one run.
# Writes bench/results.json and the table bench/results.md.
bench: install bytecode
	$(BIN)/i24net bench --json bench/results.json

# The chaos soak (about 15 minutes): 20,000 messages among the 198 agencies of the interpol
# preset on Mosquitto while the router, the broker, isolated agencies and whole node hosts are
# SIGKILLed, agencies crash inside their hosts and processes are frozen; judged from the
# outside history, exits 3 unless every message was delivered exactly once. Writes
# bench/out/chaos.json and the history bench/out/chaos-history.jsonl (ignored by git).
chaos: install bytecode
	$(BIN)/i24net chaos --messages 20000 --preset interpol --engine mosquitto --duration 400 \
	  --settle 600 --json bench/out/chaos.json --history bench/out/chaos-history.jsonl

# Scale-out: a 3-member NATS cluster on 127.0.0.1, two router shards, nodes spread
# over the members. The tests, then a chaos soak that SIGKILLs a member and a router
# mid-stream and keeps them down while messages flow; exits 3 on any loss or duplicate.
# Writes the soak's figures to CLUSTER_JSON (default bench/out/cluster-chaos.json, ignored by
# git; `make test-cluster CLUSTER_JSON=FILE` names another) and its history next to it;
# the committed bench/cluster-chaos.json is the reference result (bench/README.md).
CLUSTER_JSON ?= bench/out/cluster-chaos.json
test-cluster: install bytecode
	$(BIN)/pytest -q -p no:cacheprovider -m cluster
	$(BIN)/i24net chaos --engine nats --routers 2 --plan cluster --nodes 12 --messages 3000 \
	  --duration 90 --settle 300 --json $(CLUSTER_JSON) \
	  --history $(basename $(CLUSTER_JSON))-history.jsonl

# Every example drill both ways (about 25 minutes): virtual time, then live on the embedded
# broker, each expectation's two verdicts compared; stops at the first file whose verdicts
# differ or fail. Writes one JSON report per file under bench/out/exercises/ (ignored by git).
EXERCISES ?= $(wildcard examples/exercises/*.toml)
exercises: install bytecode
	@mkdir -p bench/out/exercises
	@for f in $(EXERCISES); do \
	  echo "== $$f"; \
	  $(BIN)/i24net exercise run --both -q "$$f" \
	    --json-out bench/out/exercises/$$(basename $$f .toml).json || exit $$?; \
	done

# Scale (several minutes): the whole network live, side by side (interpol on the embedded
# broker and on Mosquitto, 1,000 agencies on the embedded broker): up, processes, RSS, @ALL,
# idle CPU, down, against the targets; then two router shards against one, alternating rounds
# on the NATS cluster. Writes under bench/out/ (ignored by git).
bench-scale: install bytecode
	$(BIN)/i24net bench --network --json bench/out/scale-network.json \
	  --table bench/out/scale-network.md
	$(BIN)/i24net bench --scale --engine nats --routers 2 --json bench/out/scale.json

# Mutation testing (about ten minutes on two cores): mutmut mutates the routing policy, the
# envelope and the soak checker (setup.cfg [mutmut]) in a copy under mutants/ and runs the fast
# sans-IO tests against each mutant, MUTANT_JOBS at a time. Starts afresh so new tests count;
# prints the score per file and writes bench/out/mutants.json (both ignored by git).
# `$(BIN)/mutmut show NAME` shows a survivor afterwards.
MUTANT_JOBS ?= 2
mutants: install
	rm -rf mutants
	$(BIN)/mutmut run --max-children $(MUTANT_JOBS)
	$(BIN)/python tools/mutation_score.py --survivors --json bench/out/mutants.json

lint: install
	$(BIN)/ruff check i24net tests
	$(BIN)/mypy i24net

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find i24net tests -name __pycache__ -type d -prune -exec rm -rf {} +
