#!/usr/bin/env bash
# The throwaway Postgres behind `make run`: `start` (re)creates roles and passwords and starts
# it on 127.0.0.1:55432 with TLS and SCRAM; `replica` (for `make run-rds`) adds a hot standby of
# it on 127.0.0.1:55433, copied afresh; `stop` stops both.
#
# The cluster lives in a directory of its own under /tmp, reachable by the `postgres` user
# whatever the permissions of the checkout, and target/dev links to it:
#   target/dev/pgdata    data directory (target/dev/replica: the standby's)
#   target/dev/run       unix socket (superuser `postgres`, trust, socket only)
#   target/dev/secrets   {orders,billing}.json, the credentials pgvalet reads
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pg-env.sh

PORT=${PGVALET_DEV_PG_PORT:-55432}
REPLICA_PORT=$((PORT + 1))
BIN=$(pg_bindir)
DEV=/tmp/pgvalet-dev-$(pwd | sha256sum | cut -c1-12)

link_dev_dir() {
  mkdir -p "$DEV" target
  chmod 755 "$DEV"
  if [ -e target/dev ] && [ ! -L target/dev ]; then rm -rf target/dev; fi
  ln -sfn "$DEV" target/dev
}

running() {
  [ -f "$DEV/$1/postmaster.pid" ] && as_pg "$BIN/pg_ctl" -D "$DEV/$1" status >/dev/null 2>&1
}

stop() {
  if running replica; then
    as_pg "$BIN/pg_ctl" -D "$DEV/replica" -m fast -w stop >/dev/null
    echo "stopped the development standby"
  fi
  if running pgdata; then
    as_pg "$BIN/pg_ctl" -D "$DEV/pgdata" -m fast -w stop >/dev/null
    echo "stopped the development Postgres"
  fi
}

# The options both servers start with; $1 is the port.
server_options() {
  echo "-c listen_addresses=127.0.0.1 -c port=$1 -c unix_socket_directories=$DEV/run \
    -c ssl=on -c ssl_cert_file=$DEV/tls/server.crt -c ssl_key_file=$DEV/tls/server.key \
    -c ssl_ca_file=$DEV/tls/ca.crt -c password_encryption=scram-sha-256"
}

replica() {
  running pgdata || { echo "start the development Postgres first" >&2; exit 1; }
  if running replica; then as_pg "$BIN/pg_ctl" -D "$DEV/replica" -m fast -w stop >/dev/null; fi
  rm -rf "$DEV/replica"
  mkdir -p "$DEV/replica"
  give_pg "$DEV/replica"
  as_pg "$BIN/pg_basebackup" -D "$DEV/replica" -h "$DEV/run" -p "$PORT" -U postgres -R -X stream -c fast \
    >"$DEV/log/basebackup.log" 2>&1 || { cat "$DEV/log/basebackup.log" >&2; exit 1; }
  as_pg chmod 700 "$DEV/replica"
  as_pg "$BIN/pg_ctl" -D "$DEV/replica" -l "$DEV/log/replica.log" -w -t 30 start \
    -o "$(server_options "$REPLICA_PORT")" >/dev/null || { tail -n 20 "$DEV/log/replica.log" >&2; exit 1; }
  echo "development standby on 127.0.0.1:$REPLICA_PORT (log target/dev/log/replica.log)"
}

start() {
  link_dev_dir
  stop
  if [ ! -f "$DEV/pgdata/PG_VERSION" ]; then
    rm -rf "$DEV/pgdata"
    mkdir -p "$DEV/pgdata"
    give_pg "$DEV/pgdata"
    as_pg "$BIN/initdb" -D "$DEV/pgdata" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      -E UTF8 --locale=C -N >"$DEV/initdb.log" 2>&1 || { cat "$DEV/initdb.log" >&2; exit 1; }
  fi
  mkdir -p "$DEV/run" "$DEV/tls" "$DEV/log"
  cp certs-dev/postgres.crt "$DEV/tls/server.crt"
  cp certs-dev/postgres.key "$DEV/tls/server.key"
  cp certs-dev/ca.crt "$DEV/tls/ca.crt"
  chmod 600 "$DEV/tls/server.key"
  cat >"$DEV/pgdata/pg_hba.conf" <<HBA
# Superuser over the unix socket only; services over TLS with SCRAM; nothing in plaintext.
local     all  postgres                trust
local     replication  postgres        trust
hostssl   all  all       127.0.0.1/32  scram-sha-256
hostssl   all  all       ::1/128       scram-sha-256
HBA
  give_pg "$DEV/run" "$DEV/tls" "$DEV/log" "$DEV/pgdata"
  as_pg "$BIN/pg_ctl" -D "$DEV/pgdata" -l "$DEV/log/postgres.log" -w -t 30 start \
    -o "$(server_options "$PORT")" >/dev/null || { tail -n 20 "$DEV/log/postgres.log" >&2; exit 1; }

  mkdir -p "$DEV/secrets"
  chmod 700 "$DEV/secrets"
  for svc in orders billing; do
    password=$(random_hex)
    as_pg psql -X -q -v ON_ERROR_STOP=1 -h "$DEV/run" -p "$PORT" -U postgres -d postgres >/dev/null <<SQL
SELECT 'CREATE ROLE ${svc}_svc LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '${svc}_svc')\gexec
ALTER ROLE ${svc}_svc PASSWORD '${password}';
SELECT 'CREATE DATABASE ${svc} OWNER ${svc}_svc' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '${svc}')\gexec
REVOKE ALL ON DATABASE ${svc} FROM PUBLIC;
SQL
    umask 077
    printf '{"engine":"postgres","username":"%s_svc","password":"%s","host":"127.0.0.1","port":%s,"dbname":"%s"}\n' \
      "$svc" "$password" "$PORT" "$svc" >"$DEV/secrets/$svc.json"
  done
  echo "development Postgres on 127.0.0.1:$PORT (data in target/dev/pgdata, log target/dev/log/postgres.log)"
}

case "${1:-start}" in
  start) start ;;
  replica) replica ;;
  stop) stop ;;
  *) echo "usage: $0 start|replica|stop" >&2; exit 2 ;;
esac
