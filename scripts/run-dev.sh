#!/usr/bin/env bash
# `make run`: the development Postgres, then pgvalet in the foreground with config/dev.toml.
# `make run-aws` (this script with `aws`): also a local Secrets Manager (moto) on 127.0.0.1:4566
# holding the dev credentials, and pgvalet with config/dev-aws.toml. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-file}
CONFIG=config/dev.toml
MOTO_PID=

cleanup() {
  trap - EXIT INT TERM
  if [ -n "$MOTO_PID" ]; then kill "$MOTO_PID" 2>/dev/null || true; fi
  scripts/dev-cluster.sh stop || true
}
# A signal ends the script after cleaning up; it must not go on to start pgvalet.
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

scripts/dev-cluster.sh start
if [ "$MODE" = aws ]; then
  CONFIG=config/dev-aws.toml
  .venv/bin/moto_server -H 127.0.0.1 -p 4566 >target/dev/moto.log 2>&1 &
  MOTO_PID=$!
  for _ in $(seq 1 100); do
    (exec 3<>/dev/tcp/127.0.0.1/4566) 2>/dev/null && break
    sleep 0.1
  done
  .venv/bin/python scripts/dev-secrets.py store
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
  cat <<AWS

Local Secrets Manager on 127.0.0.1:4566 (pgvalet/dev/orders, pgvalet/dev/billing). Rotate one by hand
while a client runs:  .venv/bin/python scripts/dev-secrets.py rotate orders
Password mode, as with RDS Proxy (no certificate; the password is in target/dev/secrets/orders.json):
  psql "host=127.0.0.1 port=6432 dbname=orders user=orders_svc sslmode=verify-full sslrootcert=certs-dev/ca.crt"
AWS
fi
cat <<BANNER

pgvalet is starting on 127.0.0.1:6432. In another terminal, from this directory:

  psql "host=127.0.0.1 port=6432 dbname=orders user=orders sslmode=verify-full sslrootcert=certs-dev/ca.crt sslcert=certs-dev/orders.crt sslkey=certs-dev/orders.key"

(billing: dbname=billing user=billing with certs-dev/billing.crt and .key). Ctrl-C stops pgvalet and Postgres.

BANNER
target/release/pgvalet --config "$CONFIG"
