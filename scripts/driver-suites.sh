#!/usr/bin/env bash
# Runs the test suites that drivers ship against Postgres directly and through pgvalet in
# session and in transaction mode, and prints, per suite and mode, the tests that pass direct
# but fail through pgvalet. docs/compatibility.md says how to get each suite and what the last
# run found. Not part of `make test`: it installs packages and runs for many minutes.
#
#   scripts/driver-suites.sh --psycopg DIR --asyncpg DIR --node-postgres DIR \
#       [--only SUITE[,SUITE]] [--ways direct,session,transaction] [--keep]
#
# DIR is a checkout of the suite's repository at the tag named in docs/compatibility.md.
# Everything runs on loopback: one throwaway Postgres (TLS, SCRAM) on a free port, and for each
# suite and pgvalet mode a pgvalet process (release build) on a free port in front of it, with
# one route: a certificate route (client certificate certs-dev/orders.crt), or for a driver
# whose suite cannot present a certificate (node-postgres) a password route (RDS Proxy style).
# The route logs in as the same superuser role the direct runs use, and the client sends that
# role's name. Results go to target/driver-suites/results/.
# The temporary cluster and processes are removed at exit (--keep leaves the cluster's files).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pg-env.sh

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

declare -A SUITE_DIR=()
ONLY=psycopg,asyncpg,node-postgres
WAYS=direct,session,transaction
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --psycopg | --asyncpg | --node-postgres) SUITE_DIR[${1#--}]=$(readlink -f "$2"); shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --ways) WAYS=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h | --help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done

SUITES=()
for s in ${ONLY//,/ }; do
  case "$s" in psycopg | asyncpg | node-postgres) ;; *) echo "unknown suite: $s" >&2; exit 2 ;; esac
  if [ -n "${SUITE_DIR[$s]:-}" ]; then SUITES+=("$s"); else echo "skipping $s: no --$s DIR given"; fi
done
[ ${#SUITES[@]} -gt 0 ] || { echo "no suite to run" >&2; usage; }

OUT=$PWD/target/driver-suites
RESULTS=$OUT/results
mkdir -p "$RESULTS"

# ---------------------------------------------------------------- pgvalet, certificates, tools
case ",$WAYS," in
  *,session,* | *,transaction,*) [ -x target/release/pgvalet ] || cargo build --release ;;
esac
[ -f certs-dev/ca.crt ] || cargo run --release -q --example devpki -- certs-dev
PGVALET=$PWD/target/release/pgvalet
CERTS=$PWD/certs-dev

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

install_deps() {
  case "$1" in
    psycopg)
      # The binary package of the checkout's version, and the test extras of its pyproject
      # (less mypy and coverage, which the runs below do not use).
      local version
      version=$(sed -n 's/^version = "\(.*\)"/\1/p' "${SUITE_DIR[psycopg]}/psycopg/pyproject.toml")
      [ -x "$OUT/psycopg-venv/bin/python" ] || python3 -m venv "$OUT/psycopg-venv"
      "$OUT/psycopg-venv/bin/pip" install -q --disable-pip-version-check \
        "psycopg[binary,pool]==$version" 'anyio>=4.0' 'pproxy>=2.7' pytest pytest-randomly ;;
    asyncpg)
      # The released wheel of the checkout's version; the tests run from the checkout.
      local version
      version=$(sed -n "s/^__version__.* = '\(.*\)'/\1/p" "${SUITE_DIR[asyncpg]}/asyncpg/_version.py")
      [ -x "$OUT/asyncpg-venv/bin/python" ] || python3 -m venv "$OUT/asyncpg-venv"
      "$OUT/asyncpg-venv/bin/pip" install -q --disable-pip-version-check "asyncpg==$version" \
        pytest 'distro~=1.9.0' ;;
    node-postgres)
      # The checkout's packages/pg runs from the checkout; its runtime dependencies and the few
      # test dependencies come from npm into a node_modules of our own (found via NODE_PATH).
      mkdir -p "$OUT/node-postgres"
      [ -f "$OUT/node-postgres/package.json" ] || echo '{"private":true}' >"$OUT/node-postgres/package.json"
      (cd "$OUT/node-postgres" && npm install -s --no-audit --no-fund --omit=optional \
        pg-connection-string pg-pool pg-protocol pg-types@2.2.0 pgpass@1.0.5 \
        async@2.6.4 bluebird@3.7.2 co@4.6.0 pg-copy-streams@0.3.0) ;;
  esac
}

# ---------------------------------------------------------------- Postgres
BIN=$(pg_bindir)
WORK=$(mktemp -d /tmp/pgvalet-suites.XXXXXX)
chmod 755 "$WORK"
PG_PORT=$(free_port)
ROLE=suites
PASSWORD=$(random_hex)
PGVALET_PID=

stop_pgvalet() {
  if [ -n "$PGVALET_PID" ]; then
    kill -TERM "$PGVALET_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$PGVALET_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PGVALET_PID" 2>/dev/null || true
    wait "$PGVALET_PID" 2>/dev/null || true
    PGVALET_PID=
  fi
}

cleanup() {
  stop_pgvalet
  if [ -f "$WORK/pgdata/postmaster.pid" ]; then
    as_pg "$BIN/pg_ctl" -D "$WORK/pgdata" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  if [ "$KEEP" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for s in "${SUITES[@]}"; do
  echo "== installing the test dependencies of $s"
  install_deps "$s"
done

echo "== starting Postgres on 127.0.0.1:$PG_PORT"
mkdir -p "$WORK/pgdata" "$WORK/run" "$WORK/tls" "$WORK/log" "$WORK/secrets"
cp "$CERTS/postgres.crt" "$WORK/tls/server.crt"
cp "$CERTS/postgres.key" "$WORK/tls/server.key"
cp "$CERTS/ca.crt" "$WORK/tls/ca.crt"
chmod 600 "$WORK/tls/server.key"
give_pg "$WORK/pgdata" "$WORK/run" "$WORK/tls" "$WORK/log"
as_pg "$BIN/initdb" -D "$WORK/pgdata" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
  -E UTF8 --locale=C -N >"$WORK/initdb.log" 2>&1 || { cat "$WORK/initdb.log" >&2; exit 1; }
cat >"$WORK/pgdata/pg_hba.conf" <<HBA
local     all  postgres                trust
hostssl   all  all       127.0.0.1/32  scram-sha-256
HBA
# max_prepared_transactions: the two-phase-commit tests run instead of skipping.
as_pg "$BIN/pg_ctl" -D "$WORK/pgdata" -l "$WORK/log/postgres.log" -w -t 30 start -o "\
  -c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$WORK/run \
  -c ssl=on -c ssl_cert_file=$WORK/tls/server.crt -c ssl_key_file=$WORK/tls/server.key \
  -c ssl_ca_file=$WORK/tls/ca.crt -c password_encryption=scram-sha-256 \
  -c max_connections=200 -c max_prepared_transactions=20 -c jit=off" >/dev/null \
  || { tail -n 20 "$WORK/log/postgres.log" >&2; exit 1; }
as_pg psql -X -q -v ON_ERROR_STOP=1 -h "$WORK/run" -p "$PG_PORT" -U postgres -d postgres >/dev/null <<SQL
CREATE ROLE $ROLE SUPERUSER LOGIN PASSWORD '$PASSWORD';
CREATE DATABASE $ROLE OWNER $ROLE;
SQL
printf '{"username":"%s","password":"%s"}\n' "$ROLE" "$PASSWORD" >"$WORK/secrets/suites.json"
chmod 600 "$WORK/secrets/suites.json"

# ---------------------------------------------------------------- pgvalet
start_pgvalet() { # mode auth: one route, "cert" (certs-dev/orders.crt) or "password"
  local mode=$1 auth=$2 port route
  port=$(free_port)
  if [ "$auth" = cert ]; then
    route='identity = "uri:spiffe://pgvalet.dev/svc/orders"'
  else
    route='auth = "password"'
  fi
  cat >"$WORK/pgvalet-$mode.toml" <<TOML
listen_addr = "127.0.0.1:$port"
allow_cidrs = ["127.0.0.0/8"]

[tls]
cert = "$CERTS/server.crt"
key = "$CERTS/server.key"
client_ca = "$CERTS/ca.crt"

[backends.pg]
host = "127.0.0.1"
port = $PG_PORT
tls = "verify-full"
ca = "$CERTS/ca.crt"
server_name = "localhost"

[credentials.suites]
source = "file"
path = "$WORK/secrets/suites.json"

[[routes]]
name = "suites"
$route
users = ["$ROLE"]
databases = ["*"]
backend = "pg"
credentials = "suites"
pool_mode = "$mode"
TOML
  "$PGVALET" --config "$WORK/pgvalet-$mode.toml" >"$LOG" 2>&1 &
  PGVALET_PID=$!
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then PROXY_PORT=$port; return; fi
    kill -0 "$PGVALET_PID" 2>/dev/null || break
    sleep 0.1
  done
  cat "$LOG" >&2
  exit 1
}

# ---------------------------------------------------------------- the suites
# Each run gets the server's address in the libpq environment variables (all three drivers read
# them); through pgvalet psycopg and asyncpg present the client certificate, node-postgres
# (whose suite cannot) uses the password route. Every run is bounded by `timeout`.
run_suite() { # suite way port
  local suite=$1 way=$2 port=$3 dir=${SUITE_DIR[$1]} out=$RESULTS/$1-$2
  local -a env=(PGHOST=127.0.0.1 PGPORT="$port" PGUSER=$ROLE PGPASSWORD="$PASSWORD" PGDATABASE=$ROLE
    PGSSLMODE=verify-full PGSSLROOTCERT="$CERTS/ca.crt" PYTHONDONTWRITEBYTECODE=1)
  local tls=""
  if [ "$way" != direct ] && [ "$suite" != node-postgres ]; then
    env+=(PGSSLCERT="$CERTS/orders.crt" PGSSLKEY="$CERTS/orders.key")
    tls=" sslcert=$CERTS/orders.crt sslkey=$CERTS/orders.key"
  fi
  rm -rf "$out" && mkdir -p "$out"
  echo "== $suite, $way (port $port)"
  local start=$SECONDS
  case "$suite" in
    psycopg)
      # -p no:randomly: the same order every way. test_typing runs mypy, not the database.
      # Tests marked slow or timing (sleeps, pool timeouts, measured durations) are left out:
      # they take most of the suite's time and measure the machine more than the protocol.
      (cd "$dir" && env "${env[@]}" timeout 3600 "$OUT/psycopg-venv/bin/pytest" -q -p no:randomly \
        -m "not slow and not timing" --durations=20 \
        -o cache_dir="$out/pytest-cache" --junitxml="$out/junit.xml" -o junit_family=xunit2 \
        --test-dsn "host=127.0.0.1 port=$port user=$ROLE dbname=$ROLE sslmode=verify-full sslrootcert=$CERTS/ca.crt$tls" \
        --deselect tests/test_typing.py tests >"$out/output.txt" 2>&1) || true ;;
    asyncpg)
      # --import-mode=append: the installed asyncpg, not the uncompiled one in the checkout.
      # PGHOST makes its test base use the running server instead of making clusters.
      (cd "$dir" && env "${env[@]}" timeout 3600 "$OUT/asyncpg-venv/bin/pytest" -q --import-mode=append \
        -p no:cacheprovider --junitxml="$out/junit.xml" -o junit_family=xunit2 tests \
        >"$out/output.txt" 2>&1) || true ;;
    node-postgres)
      # Each integration test file is a program that prints a line per test and stops at the
      # first failure, as the package's own Makefile runs them (pg-native's left out).
      local f
      (cd "$dir/packages/pg" && find test/integration -name '*-tests.js' | grep -v native | sort) |
        while read -r f; do
          echo "### $f"
          (cd "$dir/packages/pg" && env "${env[@]}" NODE_PATH="$OUT/node-postgres/node_modules" \
            NODE_EXTRA_CA_CERTS="$CERTS/ca.crt" NODE_NO_WARNINGS=1 timeout 120 node "$f" 2>&1) && rc=0 || rc=$?
          echo "### exit $rc"
        done >"$out/output.txt" ;;
  esac
  echo "   $((SECONDS - start)) s"
  drop_leftovers
}

# A database a suite left behind (say, because a pooled connection kept it open when the suite
# dropped it) would change the next run's outcome: each run starts with the databases of the
# first.
admin_sql() { as_pg psql -X -q -At -v ON_ERROR_STOP=1 -h "$WORK/run" -p "$PG_PORT" -U postgres -d postgres "$@"; }
drop_leftovers() {
  local db
  for db in $(admin_sql -c "SELECT datname FROM pg_database WHERE datname NOT IN ('postgres', 'template0', 'template1', '$ROLE')"); do
    echo "   dropping database $db, left by the run"
    admin_sql -c "DROP DATABASE \"$db\" WITH (FORCE)" >/dev/null
  done
}

IFS=, read -r -a WAY_LIST <<<"$WAYS"
for way in "${WAY_LIST[@]}"; do
  for s in "${SUITES[@]}"; do
    case "$way" in
      direct) run_suite "$s" direct "$PG_PORT" ;;
      session | transaction)
        # A pgvalet of its own per suite and mode: fresh pools, and its log beside the results.
        auth=cert
        [ "$s" = node-postgres ] && auth=password
        LOG=$RESULTS/pgvalet-$s-$way.log
        start_pgvalet "$way" "$auth"
        run_suite "$s" "$way" "$PROXY_PORT"
        stop_pgvalet ;;
      *) echo "unknown way: $way" >&2; exit 2 ;;
    esac
  done
done

python3 scripts/driver-suites-report.py "$RESULTS" "${SUITES[@]}"
