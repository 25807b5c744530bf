#!/usr/bin/env bash
# pgbench through pgvalet, side by side with Postgres over TLS directly and with PgBouncer
# (client mTLS, TLS to the server), all against one throwaway Postgres, in one run. Figures move
# between runs and machines: compare the ratios within a run, not absolute numbers.
#
# A "bare TCP hop" column runs pgbench through examples/tcp_hop (bytes forwarded, TLS end to end
# between pgbench and Postgres): the cheapest extra hop there is, so the most any proxy can reach
# on this machine. Where pgbench, Postgres and the proxy share a few cores, it sits well below
# direct TLS.
#
#   scripts/bench.sh                 # 10 s per measurement, 16 clients, 2 pgbench threads
#   BENCH_SECONDS=30 scripts/bench.sh
#
# Prints a Markdown table. Installs PgBouncer from the distribution if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pg-env.sh
. scripts/pgbouncer-env.sh

T=${BENCH_SECONDS:-10}
C=${BENCH_CLIENTS:-16}
J=${BENCH_THREADS:-2}
SCALE=${BENCH_SCALE:-5}

pgbouncer_install
cargo build --release -q
cargo build --release -q --example tcp_hop
make -s certs

BIN=$(pg_bindir)
W=$(mktemp -d /tmp/pgvalet-bench-XXXXXX)
chmod 755 "$W"
PG_PORT=56432 PGV_PORT=56433 PGB_PORT=56434 HOP_PORT=56435
PGV_PID= HOP_PID=
cleanup() {
  [ -n "$HOP_PID" ] && kill "$HOP_PID" 2>/dev/null || true
  [ -n "$PGV_PID" ] && kill "$PGV_PID" 2>/dev/null || true
  [ -f "$W/pgbouncer.pid" ] && kill "$(cat "$W/pgbouncer.pid")" 2>/dev/null || true
  as_pg "$BIN/pg_ctl" -D "$W/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT

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
  -c ssl_ca_file=$W/ca.crt -c max_connections=300 -c shared_buffers=256MB -c fsync=off -c synchronous_commit=off" >/dev/null
PW=$(random_hex)
as_pg psql -X -q -h "$W/run" -p $PG_PORT -U postgres -d postgres \
  -c "CREATE ROLE bench_svc LOGIN PASSWORD '$PW'" -c "CREATE DATABASE bench OWNER bench_svc" >/dev/null
PGPASSWORD=$PW PGSSLMODE=verify-full PGSSLROOTCERT=certs-dev/ca.crt \
  pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p $PG_PORT -U bench_svc bench >/dev/null 2>&1

# pgvalet: one route per pool mode, pools as large as PgBouncer's.
printf '{"username":"bench_svc","password":"%s"}\n' "$PW" >"$W/bench.json"
cat >"$W/pgvalet.toml" <<TOML
listen_addr = "127.0.0.1:$PGV_PORT"
allow_cidrs = ["127.0.0.0/8"]
max_clients = 1000
[tls]
cert = "certs-dev/server.crt"
key = "certs-dev/server.key"
client_ca = "certs-dev/ca.crt"
[backends.pg]
host = "127.0.0.1"
port = $PG_PORT
ca = "certs-dev/ca.crt"
server_name = "localhost"
[credentials.bench]
source = "file"
path = "$W/bench.json"
[[routes]]
name = "session"
identity = "uri:spiffe://pgvalet.dev/svc/orders"
databases = ["bench"]
backend = "pg"
credentials = "bench"
max_size = 64
[[routes]]
name = "transaction"
identity = "uri:spiffe://pgvalet.dev/svc/orders"
databases = ["bench"]
backend = "pg"
credentials = "bench"
pool_mode = "transaction"
max_size = $C
TOML
PGVALET_LOG=warn target/release/pgvalet --config "$W/pgvalet.toml" >"$W/pgvalet.log" 2>&1 &
PGV_PID=$!
target/release/examples/tcp_hop 127.0.0.1:$HOP_PORT 127.0.0.1:$PG_PORT &
HOP_PID=$!

# PgBouncer: client certificate auth (CN "orders"), TLS to Postgres, transaction pooling.
pgbouncer_start "$W" "$PGB_PORT" "$PG_PORT" bench bench_svc "$PW" "$C" 1000
for port in $PGV_PORT $PGB_PORT $HOP_PORT; do
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done
echo 'select 1;' >"$W/select1.sql"
give_pg "$W"

# CPU time (user + system, in clock ticks) a process has used so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
proxy_pid() {
  case $1 in
    session|transaction) echo "$PGV_PID" ;;
    pgbouncer) cat "$W/pgbouncer.pid" ;;
    hop) echo "$HOP_PID" ;;
    *) echo "" ;;
  esac
}

# One measurement: prints TPS, or the average latency in ms with "latency". For a proxy, also
# leaves its CPU time per transaction (µs) in $W/cpu-TARGET-WHAT.
run() {
  local target=$1 what=$2 out pid before
  local -a conn args
  case $target in
    direct) conn=(-h 127.0.0.1 -p $PG_PORT -U bench_svc) ;;
    hop) conn=(-h 127.0.0.1 -p $HOP_PORT -U bench_svc) ;;
    session) conn=(-h 127.0.0.1 -p $PGV_PORT -U session) ;;
    transaction) conn=(-h 127.0.0.1 -p $PGV_PORT -U transaction) ;;
    pgbouncer) conn=(-h 127.0.0.1 -p $PGB_PORT -U orders) ;;
  esac
  case $what in
    S) args=(-S -c "$C" -j "$J") ;;
    select1) args=(-f "$W/select1.sql" -c "$C" -j "$J") ;;
    latency) args=(-f "$W/select1.sql" -c 1 -j 1) ;;
    connect) args=(-S -C -c 8 -j 8) ;;
  esac
  pid=$(proxy_pid "$target"); before=$([ -n "$pid" ] && cpu_ticks "$pid")
  out=$(PGPASSWORD=$PW PGSSLMODE=verify-full PGSSLROOTCERT=certs-dev/ca.crt \
        PGSSLCERT=certs-dev/orders.crt PGSSLKEY=certs-dev/orders.key \
        pgbench -n -T "$T" "${args[@]}" "${conn[@]}" bench 2>&1) || { echo "fail"; return; }
  if [ -n "$pid" ]; then
    local txns
    txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
    awk -v t="$(( $(cpu_ticks "$pid") - before ))" -v hz="$(getconf CLK_TCK)" -v n="${txns:-0}" \
      'BEGIN { if (n > 0) printf "%.1f\n", t / hz * 1e6 / n; else print "–" }' >"$W/cpu-$target-$what"
  fi
  if [ "$what" = latency ]; then
    sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' <<<"$out"
  else
    sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | awk '{ printf "%.0f\n", $1 }'
  fi
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a+0 > 0 && b+0 > 0) printf "%.2f×", a / b; else print "–" }'; }

echo "pgbench ${T}s per cell, -c $C -j $J unless noted, scale $SCALE, $(nproc) cores; $(pgbouncer --version | head -n 1)"
echo
echo "| measure | direct TLS | bare TCP hop | pgvalet session | pgvalet transaction | PgBouncer transaction (mTLS) | pgvalet txn ÷ PgBouncer | pgvalet txn ÷ direct | bare hop ÷ direct |"
echo "|---|---|---|---|---|---|---|---|---|"
for what in S select1 latency connect; do
  d=$(run direct $what); h=$(run hop $what); s=$(run session $what); t=$(run transaction $what)
  b=$(run pgbouncer $what)
  case $what in
    S) label="\`-S\` TPS" ;;
    select1) label="\`SELECT 1\` TPS" ;;
    latency) label="single-client \`SELECT 1\` latency, ms (lower is better)" ;;
    connect) label="new connections/s (\`-C -S -c 8 -j 8\`)" ;;
  esac
  echo "| $label | $d | $h | $s | $t | $b | $(ratio "$t" "$b") | $(ratio "$t" "$d") | $(ratio "$h" "$d") |"
done
# How much CPU each proxy spends per transaction: on a machine whose cores pgbench and Postgres
# already fill, this is what decides throughput through a proxy.
cpu() { cat "$W/cpu-$1-$2" 2>/dev/null || echo "–"; }
for what in S select1; do
  case $what in
    S) label="proxy CPU per \`-S\` transaction, µs (lower is better)" ;;
    select1) label="proxy CPU per \`SELECT 1\`, µs (lower is better)" ;;
  esac
  h=$(cpu hop $what); s=$(cpu session $what); t=$(cpu transaction $what); b=$(cpu pgbouncer $what)
  echo "| $label | – | $h | $s | $t | $b | $(ratio "$t" "$b") | – | – |"
done
