#!/usr/bin/env bash
# `make run`: the development Postgres, then pgvalet in the foreground with config/dev.toml.
# `make run-aws` (this script with `aws`): also a local Secrets Manager (moto) on 127.0.0.1:4566
# holding the dev credentials, and pgvalet with config/dev-aws.toml. `make run-rds` (`rds`): the
# same plus a hot standby and pgvalet with config/dev-rds.toml, standing in for RDS Proxy (IAM auth
# tokens, a read-only endpoint). Ctrl-C stops everything.
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
if [ "$MODE" = rds ]; then scripts/dev-cluster.sh replica; fi
if [ "$MODE" = aws ] || [ "$MODE" = rds ]; then
  CONFIG=config/dev-aws.toml
  .venv/bin/moto_server -H 127.0.0.1 -p 4566 >target/dev/moto.log 2>&1 &
  MOTO_PID=$!
  for _ in $(seq 1 100); do
    (exec 3<>/dev/tcp/127.0.0.1/4566) 2>/dev/null && break
    sleep 0.1
  done
  .venv/bin/python scripts/dev-secrets.py store
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
fi
if [ "$MODE" = rds ]; then
  CONFIG=config/dev-rds.toml
  # What an app configured for RDS Proxy with IAM authentication does: make a token with boto3
  # for the endpoint it connects to, and send it as the password.
  TOKEN="import boto3; print(boto3.client('rds', region_name='us-east-1').generate_db_auth_token(DBHostname='localhost', Port=PORT, DBUsername='orders_svc'))"
  cat <<RDS

Standing in for RDS Proxy: IAM auth tokens (moto's keys testing/testing) for orders_svc on the
read/write endpoint localhost:6432 and the read-only endpoint localhost:6433 (served by the
standby on 55433). In another terminal, from this directory:

  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing .venv/bin/python -c "import boto3, psycopg; t = boto3.client('rds', region_name='us-east-1').generate_db_auth_token(DBHostname='localhost', Port=6432, DBUsername='orders_svc'); print(psycopg.connect(host='localhost', port=6432, dbname='orders', user='orders_svc', password=t, sslmode='verify-full', sslrootcert='certs-dev/ca.crt').execute('select current_user, inet_server_port(), pg_is_in_recovery()').fetchone())"

  PGPASSWORD=\$(AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing .venv/bin/python -c "${TOKEN/PORT/6433}") psql "host=localhost port=6433 dbname=orders user=orders_svc sslmode=verify-full sslrootcert=certs-dev/ca.crt" -c "select inet_server_port(), pg_is_in_recovery()"

A write on 6433 gets ERROR 25006 (cannot execute ... in a read-only transaction).
RDS
elif [ "$MODE" = aws ]; then
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
