#!/usr/bin/env bash
# Remakes the fuzz targets' seeds in fuzz/seeds/ from real traffic: a throwaway Postgres in
# plaintext on loopback, a recording relay in front of it (fuzz/capture.py), and real clients
# through the relay: psql and pgbench (libpq 15), psycopg (libpq 18, protocol 3.2), pgjdbc and
# tokio-postgres, logging in with SCRAM, MD5 and cleartext passwords. Hand-written seeds (PROXY
# headers, IAM tokens, configuration) are kept; the traffic-* files are replaced.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pg-env.sh

BIN=$(pg_bindir)
PG_PORT=55961
RELAY_PORT=55962
WORK=$(mktemp -d /tmp/pgvalet-fuzz-seeds.XXXXXX)
chmod 755 "$WORK"
cleanup() {
  [ -n "${RELAY_PID:-}" ] && kill "$RELAY_PID" 2>/dev/null || true
  as_pg "$BIN/pg_ctl" -D "$WORK/pgdata" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/pgdata" "$WORK/run"
give_pg "$WORK/pgdata" "$WORK/run"
as_pg "$BIN/initdb" -D "$WORK/pgdata" -U postgres --auth-local=trust -E UTF8 --locale=C -N >/dev/null 2>&1
cat >"$WORK/pgdata/pg_hba.conf" <<HBA
local all postgres              trust
host  all fuzz_md5   127.0.0.1/32 md5
host  all fuzz_clear 127.0.0.1/32 password
host  all all        127.0.0.1/32 scram-sha-256
HBA
as_pg "$BIN/pg_ctl" -D "$WORK/pgdata" -l "$WORK/run/pg.log" -w start -o \
  "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$WORK/run -c ssl=off" >/dev/null
su_sql() { as_pg "$BIN/psql" -qX -h "$WORK/run" -p "$PG_PORT" -U postgres -d postgres -c "$1" >/dev/null; }
su_sql "CREATE ROLE fuzz LOGIN PASSWORD 'fuzz-password'"
su_sql "CREATE DATABASE fuzz OWNER fuzz"
su_sql "SET password_encryption = 'md5'; CREATE ROLE fuzz_md5 LOGIN PASSWORD 'fuzz-password'"
su_sql "CREATE ROLE fuzz_clear LOGIN PASSWORD 'fuzz-password'"

python3 fuzz/capture.py relay "$RELAY_PORT" "$PG_PORT" "$WORK/rec" &
RELAY_PID=$!
sleep 0.5
export PGPASSWORD=fuzz-password
CONN="host=127.0.0.1 port=$RELAY_PORT dbname=fuzz"

# psql (libpq 15): SSLRequest refused, SCRAM, the simple protocol, COPY both ways, session state.
psql -qX "$CONN user=fuzz sslmode=prefer application_name=seeds options='-c statement_timeout=5s'" >/dev/null <<'SQL'
CREATE TABLE t (id int PRIMARY KEY, name text, data bytea);
INSERT INTO t SELECT g, 'name ' || g, '\xdeadbeef' FROM generate_series(1, 50) g;
SELECT * FROM t WHERE id < 5; SELECT 1; SELECT 'it''s', E'tab\t', $$dollar$$, $q$x$q$;
BEGIN; SET LOCAL work_mem = '8MB'; SELECT count(*) FROM t; COMMIT;
SET search_path = public; SET TIME ZONE 'UTC'; LISTEN seeds; NOTIFY seeds, 'payload';
PREPARE p1 (int) AS SELECT name FROM t WHERE id = $1; EXECUTE p1(3); DEALLOCATE p1;
CREATE TEMP TABLE tmp (x int); DECLARE c CURSOR WITH HOLD FOR SELECT 1;
SELECT pg_advisory_lock(1), set_config('application_name', 'x', false);
/* a comment */ SELECT 1 -- another
;
\copy t TO '/dev/null'
\copy t (id, name) FROM stdin
1000	a
1001	b
\.
SELECT 1/0;
DROP DATABASE IF EXISTS "no such database";
SQL
psql -qX "$CONN user=fuzz_md5 sslmode=disable" -c 'SELECT current_user' >/dev/null
psql -qX "$CONN user=fuzz_clear sslmode=disable" -c 'SELECT current_user' >/dev/null

# pgbench (libpq 15): COPY of its tables, then the simple, extended and prepared protocols.
pgbench -q -i -s 1 "$CONN user=fuzz sslmode=disable" >/dev/null 2>&1
for mode in simple extended prepared; do
  pgbench -n -t 10 -M "$mode" "$CONN user=fuzz sslmode=disable" >/dev/null 2>&1
done

# psycopg with libpq 18: protocol 3.2 (long cancel keys), a pipeline, server-side binding.
.venv/bin/python - "$RELAY_PORT" <<'PY'
import sys, psycopg
conn = psycopg.connect(host="127.0.0.1", port=sys.argv[1], dbname="fuzz", user="fuzz",
                       password="fuzz-password", sslmode="disable", max_protocol_version="3.2")
with conn.pipeline():
    for i in range(3):
        conn.execute("SELECT %s::int, %s::text", (i, f"v{i}"))
conn.execute("SELECT name FROM t WHERE id = %s", (1,), prepare=True).fetchall()
conn.cancel_safe()
conn.close()
PY

# pgjdbc: server-prepared statements, a batch, a transaction.
if [ -f /usr/share/java/postgresql.jar ] && command -v javac >/dev/null; then
  mkdir -p "$WORK/java"
  cat >"$WORK/java/Seeds.java" <<JAVA
import java.sql.*;
public class Seeds {
  public static void main(String[] a) throws Exception {
    try (Connection c = DriverManager.getConnection(
        "jdbc:postgresql://127.0.0.1:$RELAY_PORT/fuzz?sslmode=disable&prepareThreshold=1",
        "fuzz", "fuzz-password")) {
      try (PreparedStatement p = c.prepareStatement("SELECT name FROM t WHERE id = ?")) {
        for (int i = 1; i <= 3; i++) { p.setInt(1, i); p.executeQuery().close(); }
      }
      c.setAutoCommit(false);
      try (PreparedStatement p = c.prepareStatement("INSERT INTO t (id, name) VALUES (?, ?)")) {
        for (int i = 2000; i < 2005; i++) { p.setInt(1, i); p.setString(2, "j" + i); p.addBatch(); }
        p.executeBatch();
      }
      c.commit();
    }
  }
}
JAVA
  javac -d "$WORK/java" "$WORK/java/Seeds.java"
  java -cp "$WORK/java:/usr/share/java/postgresql.jar" Seeds
fi

# tokio-postgres: its extended protocol, statement cache and binary results.
cargo build -q --example fuzz_seeds_client
PGVALET_SEEDS_PORT=$RELAY_PORT "${CARGO_TARGET_DIR:-target}/debug/examples/fuzz_seeds_client"

sleep 0.5
kill "$RELAY_PID"; RELAY_PID=
rm -f fuzz/seeds/*/traffic-*
python3 fuzz/capture.py split "$WORK/rec" fuzz/seeds
du -sh fuzz/seeds
