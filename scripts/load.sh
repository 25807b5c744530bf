#!/usr/bin/env bash
# 10,000 TLS clients with client certificates through a release pgvalet, 200 of them running
# transactions on a transaction-mode route (examples/load.rs): errors, the active clients'
# p50/p99 latency, and pgvalet's resident memory per idle client. Then the same load through
# PgBouncer (transaction pooling, client certificate auth, TLS to the server) in the same run,
# for the ratio. Starts a throwaway Postgres, pgvalet and PgBouncer of its own on loopback, and
# stops them when it ends, whatever way it ends. A measurement, not a test: run it alone, e.g.
#
#   scripts/load.sh
#   LOAD_CLIENTS=2000 LOAD_ACTIVE=50 LOAD_SECONDS=10 scripts/load.sh
#   LOAD_PGBOUNCER=0 scripts/load.sh     # pgvalet alone
#
# Takes about two minutes on two cores (most of it the handshakes: both sides' on the same
# cores). Installs PgBouncer from the distribution if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pg-env.sh
. scripts/pgbouncer-env.sh

N=${LOAD_CLIENTS:-10000}
M=${LOAD_ACTIVE:-200}
T=${LOAD_SECONDS:-20}
POOL=${LOAD_POOL_SIZE:-20}
PG_PORT=${LOAD_PG_PORT:-57432}
PGV_PORT=${LOAD_PORT:-57433}
PGB_PORT=${LOAD_PGBOUNCER_PORT:-57434}
PGBOUNCER=${LOAD_PGBOUNCER:-1}
# The whole run, after the build: the load client bounds each wait; this bounds the whole.
LIMIT=${LOAD_LIMIT_SECONDS:-$((T + 240))}

# pgvalet and the load client each hold one descriptor per client (pgvalet also its pool's).
need=$((N + 1000))
[ "$(ulimit -Hn)" = unlimited ] || [ "$(ulimit -Hn)" -ge "$need" ] ||
  { echo "load.sh: the hard limit on open files is $(ulimit -Hn); $N clients need $need" >&2; exit 1; }
ulimit -n "$need"

[ "$PGBOUNCER" = 1 ] && pgbouncer_install
cargo build --release -q --bin pgvalet --example load
make -s certs DEVPKI_PROFILE=--release
TARGET=${CARGO_TARGET_DIR:-target}

BIN=$(pg_bindir)
W=$(mktemp -d /tmp/pgvalet-load-XXXXXX)
chmod 755 "$W"
PGV_PID=
cleanup() {
  [ -n "$PGV_PID" ] && kill "$PGV_PID" 2>/dev/null && wait "$PGV_PID" 2>/dev/null || true
  [ -f "$W/pgbouncer.pid" ] && kill "$(cat "$W/pgbouncer.pid")" 2>/dev/null || true
  as_pg "$BIN/pg_ctl" -D "$W/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for port in $PG_PORT $PGV_PORT $PGB_PORT; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
    echo "load.sh: 127.0.0.1:$port is taken; set LOAD_PG_PORT / LOAD_PORT / LOAD_PGBOUNCER_PORT" >&2
    exit 1
  fi
done

# Postgres: TLS + SCRAM for TCP, trust on its own socket.
cp certs-dev/postgres.crt "$W/server.crt"; cp certs-dev/postgres.key "$W/server.key"; cp certs-dev/ca.crt "$W/ca.crt"
chmod 600 "$W/server.key"
mkdir -p "$W/data" "$W/run"
give_pg "$W"
as_pg "$BIN/initdb" -D "$W/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 -N >/dev/null
printf 'local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n' >"$W/data/pg_hba.conf"
give_pg "$W"
as_pg "$BIN/pg_ctl" -D "$W/data" -l "$W/postgres.log" -w start -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT \
  -c unix_socket_directories=$W/run -c ssl=on -c ssl_cert_file=$W/server.crt -c ssl_key_file=$W/server.key \
  -c ssl_ca_file=$W/ca.crt -c max_connections=$((POOL + 20)) -c fsync=off -c synchronous_commit=off" >/dev/null
PW=$(random_hex)
as_pg psql -X -q -h "$W/run" -p "$PG_PORT" -U postgres -d postgres \
  -c "CREATE ROLE load_svc LOGIN PASSWORD '$PW'" -c "CREATE DATABASE load OWNER load_svc" >/dev/null

# pgvalet: one transaction-mode route for the orders certificate, room for every client.
printf '{"username":"load_svc","password":"%s"}\n' "$PW" >"$W/load.json"
chmod 600 "$W/load.json"
cat >"$W/pgvalet.toml" <<TOML
listen_addr = "127.0.0.1:$PGV_PORT"
allow_cidrs = ["127.0.0.0/8"]
max_clients = $((N + 100))
handshake_timeout = "30s"
[tls]
cert = "certs-dev/server.crt"
key = "certs-dev/server.key"
client_ca = "certs-dev/ca.crt"
[backends.pg]
host = "127.0.0.1"
port = $PG_PORT
ca = "certs-dev/ca.crt"
server_name = "localhost"
[credentials.load]
source = "file"
path = "$W/load.json"
[[routes]]
name = "load"
identity = "uri:spiffe://pgvalet.dev/svc/orders"
users = ["load"]
databases = ["load"]
backend = "pg"
credentials = "load"
pool_mode = "transaction"
max_size = $POOL
TOML
PGVALET_LOG=warn "$TARGET/release/pgvalet" --config "$W/pgvalet.toml" >"$W/pgvalet.log" 2>&1 &
PGV_PID=$!
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$PGV_PORT) 2>/dev/null && break; sleep 0.1; done

echo "$N TLS clients (ECDSA P-256 client certificates, TLS 1.3), $M active for ${T}s on a transaction-mode route (pool $POOL), $(nproc) cores; pgvalet $(git describe --always --dirty 2>/dev/null || echo '?')"
status=0
timeout --signal=INT "$LIMIT" "$TARGET/release/examples/load" --port "$PGV_PORT" --user load --database load \
  --clients "$N" --active "$M" --seconds "$T" --pid "$PGV_PID" --name pgvalet | tee "$W/pgvalet.out" || status=$?
if ! kill -0 "$PGV_PID" 2>/dev/null; then
  echo "load.sh: pgvalet exited during the run; its log:" >&2
  tail -n 20 "$W/pgvalet.log" >&2
  status=1
fi
if grep -q '"level":"ERROR"\|ERROR' "$W/pgvalet.log"; then
  echo "pgvalet logged errors:" >&2
  grep 'ERROR' "$W/pgvalet.log" | head -n 5 >&2
fi
kill "$PGV_PID" 2>/dev/null && wait "$PGV_PID" 2>/dev/null || true
PGV_PID=
[ "$PGBOUNCER" = 1 ] || exit "$status"

# PgBouncer: the same load, client certificate auth (CN "orders" as the user), TLS to Postgres,
# transaction pooling with the same pool size.
pgbouncer_start "$W" "$PGB_PORT" "$PG_PORT" load load_svc "$PW" "$POOL" $((N + 100))
echo
echo "The same load through $(pgbouncer --version | head -n 1)"
timeout --signal=INT "$LIMIT" "$TARGET/release/examples/load" --port "$PGB_PORT" --user orders --database load \
  --clients "$N" --active "$M" --seconds "$T" --pid "$(cat "$W/pgbouncer.pid")" --name pgbouncer | tee "$W/pgbouncer.out" || {
  status=$?
  echo "load.sh: the run through PgBouncer failed ($status); its log ends:" >&2
  tail -n 10 "$W/pgbouncer.log" >&2
}

# The ratio of the two, from the load client's own summary lines.
per_idle() { sed -n 's/^per idle client: \([0-9.]*\) KiB after connecting, \([0-9.]*\) KiB after one query.*/\1 \2/p' "$1"; }
read -r v_conn v_query <<<"$(per_idle "$W/pgvalet.out")" || true
read -r b_conn b_query <<<"$(per_idle "$W/pgbouncer.out")" || true
if [ -n "${v_query:-}" ] && [ -n "${b_query:-}" ]; then
  echo
  echo "| KiB per idle TLS client | pgvalet | PgBouncer | pgvalet ÷ PgBouncer |"
  echo "|---|---|---|---|"
  awk -v a="$v_conn" -v b="$b_conn" 'BEGIN { printf "| after connecting | %s | %s | %.2f× |\n", a, b, a / b }'
  awk -v a="$v_query" -v b="$b_query" 'BEGIN { printf "| after one query each | %s | %s | %.2f× |\n", a, b, a / b }'
fi
exit "$status"
