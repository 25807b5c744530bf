#!/usr/bin/env bash
# `make run`: the development Postgres, then pgvalet in the foreground with config/dev.toml.
# Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

cleanup() {
  trap - EXIT INT TERM
  scripts/dev-cluster.sh stop || true
}
# A signal ends the script after cleaning up; it must not go on to start pgvalet.
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

scripts/dev-cluster.sh start
cat <<BANNER

pgvalet is starting on 127.0.0.1:6432. In another terminal, from this directory:

  psql "host=127.0.0.1 port=6432 dbname=orders user=orders sslmode=verify-full sslrootcert=certs-dev/ca.crt sslcert=certs-dev/orders.crt sslkey=certs-dev/orders.key"

(billing: dbname=billing user=billing with certs-dev/billing.crt and .key). Ctrl-C stops pgvalet and Postgres.

BANNER
target/debug/pgvalet --config config/dev.toml
