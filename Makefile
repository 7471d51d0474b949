# The two commands the README promises: `make run` and `make test`.
# Both work on a fresh Debian machine that has only the Rust toolchain: `setup` installs the
# system packages the RocksDB bindings need (libclang for bindgen, a C++ compiler) when missing.

CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: run test setup fmt lint unit python

run: setup
	$(CARGO) run --locked --bin linkreg -- serve --dev

test: setup fmt lint unit python

setup:
	@missing=""; \
	ldconfig -p 2>/dev/null | grep -q 'libclang\(-[0-9.]*\)\?\.so' || missing="$$missing libclang-dev"; \
	command -v c++ >/dev/null 2>&1 || missing="$$missing g++"; \
	if [ -n "$$missing" ]; then \
		echo "setup: installing$$missing (needed to build the RocksDB bindings)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

fmt:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --locked --all-targets -- -D warnings

unit:
	$(CARGO) test --locked --all-targets

# Clients in another language against a running node (the binary `unit` built): Python grpcio
# stubs generated from proto/, and the zeep SOAP client reading the node's WSDL. Installed from
# PyPI into a venv under target/.
PYVENV := target/pyvenv
python:
	@[ -x $(PYVENV)/bin/python ] || python3 -m venv $(PYVENV) 2>/dev/null || { \
		echo "setup: installing python3-venv"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends python3 python3-venv && \
		rm -rf $(PYVENV) && python3 -m venv $(PYVENV); }
	$(PYVENV)/bin/pip install --quiet --disable-pip-version-check grpcio==1.85.3 grpcio-tools==1.85.1 \
		zeep==4.3.3 xmlschema==4.3.2 requests==2.34.2
	$(PYVENV)/bin/python tests/python/client_test.py
	$(PYVENV)/bin/python tests/python/soap_test.py
