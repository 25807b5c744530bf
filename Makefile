# pgvalet: the two commands a newcomer needs are `make run` and `make test`.

CARGO ?= cargo
SHELL := /bin/bash
CERTS := certs-dev/server-renewed.crt

VENV := .venv
# Made once the packages in tests/requirements.txt are installed, and again when it changes.
VENV_READY := $(VENV)/.installed
# node-postgres for the Node.js driver tests, pinned by tests/drivers/package-lock.json.
NODE_READY := tests/drivers/node_modules/.installed

.PHONY: run run-aws run-rds test test-containers fuzz deps venv node-deps build certs check clean-dev

## make run: build (release: what you would deploy), make the dev PKI if missing, start a
## throwaway Postgres and pgvalet.
run: deps build certs
	@scripts/run-dev.sh

## make run-aws: the same, with the credentials in a local Secrets Manager (moto on 127.0.0.1:4566).
run-aws: deps venv build certs
	@scripts/run-dev.sh aws

## make run-rds: standing in for RDS Proxy: run-aws plus a hot standby, IAM auth tokens and a
## read-only endpoint (config/dev-rds.toml); prints a boto3 one-liner that connects as an app does.
run-rds: deps venv build certs
	@scripts/run-dev.sh rds

## make test: install what is missing, then format check, clippy, cargo deny (deny.toml), a
## type check of the fuzz targets (so they keep up with the code they call) and every test.
test: deps venv node-deps certs
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) check -q --manifest-path fuzz/Cargo.toml --bins
	@scripts/deny.sh
	@mkdir -p target
	@set -o pipefail; $(CARGO) test 2>&1 | tee target/test.log
	@awk '/^test result:/ { p += $$4; f += $$6 } END { printf "tests: %d passed, %d failed\n", p, f }' target/test.log

## make test-containers: the image, the compose gateway and the ECS sidecar task, run in a real
## Docker engine (installed and started when missing; scripts/test-containers.sh).
test-containers: deps venv
	@scripts/test-containers.sh

## make fuzz: every fuzz target for FUZZ_SECONDS (default 60) each, on the nightly toolchain,
## from the seeds in fuzz/seeds (scripts/fuzz.sh; docs/security.md says what each one checks).
fuzz:
	@scripts/fuzz.sh

deps:
	@scripts/install-deps.sh

## The Python venv: the local Secrets Manager (moto server) the tests and run-aws use, and the
## Python drivers (psycopg, asyncpg) the driver tests run.
venv: $(VENV_READY)

$(VENV_READY): tests/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
	touch $@

## The Node.js packages the driver tests run (node-postgres), as the lock file pins them.
node-deps: $(NODE_READY)

$(NODE_READY): tests/drivers/package-lock.json
	cd tests/drivers && npm ci --no-audit --no-fund --loglevel=error
	touch $@

build:
	$(CARGO) build --release

# The dev PKI generator builds with the profile of the target that asks for it: release for
# run/run-aws/check (sharing make build's dependencies), debug for test (sharing cargo test's).
run run-aws run-rds check: DEVPKI_PROFILE := --release

certs: $(CERTS)

$(CERTS):
	$(CARGO) run $(DEVPKI_PROFILE) -q --example devpki -- certs-dev

## make check: validate config/dev.toml and load its certificates.
check: build certs
	target/release/pgvalet check --config config/dev.toml

clean-dev:
	-scripts/dev-cluster.sh stop
	rm -rf "$$(readlink -f target/dev)" target/dev
