"""SQL EXECUTE and DEALLOCATE of statements a client prepared with the protocol (libpq's
PQprepare, through psycopg), on a transaction-mode route, on whichever backend connection the
client lands: as direct, the name the client chose is the one SQL uses.

    python sql_execute.py PORT PKI_DIR USER DATABASE
"""

import sys

import psycopg
from psycopg import errors

PORT, PKI, USER, DB = sys.argv[1:5]
CA, CRT, KEY = f"{PKI}/ca.crt", f"{PKI}/orders.crt", f"{PKI}/orders.key"
BASE = (
    f"host=127.0.0.1 port={PORT} dbname={DB} user={USER} sslmode=verify-full "
    f"sslrootcert={CA} sslcert={CRT} sslkey={KEY}"
)

a = psycopg.connect(BASE, autocommit=True)
b = psycopg.connect(BASE, autocommit=True)
# PQprepare: a Parse and a Sync, answered by pgvalet without a backend.
for name, sql in [(b"add_one", b"select $1::int + 1"), (b"Mixed Case", b"select 'mixed'")]:
    result = a.pgconn.prepare(name, sql)
    assert result.status == psycopg.pq.ExecStatus.COMMAND_OK, result.error_message
assert a.execute("EXECUTE add_one(41)").fetchone()[0] == 42
assert a.execute('execute "Mixed Case"').fetchone()[0] == "mixed"
# No space between the keyword and a quoted name, as Postgres allows.
assert a.execute('EXECUTE"add_one"(1)').fetchone()[0] == 2
first_pid = a.execute("select pg_backend_pid()").fetchone()[0]

with b.transaction():
    # b holds a's last connection: a's EXECUTEs run on another, which lacks the statements.
    assert b.execute("select pg_backend_pid()").fetchone()[0] == first_pid
    assert a.execute("select pg_backend_pid()").fetchone()[0] != first_pid
    # Simple query protocol (psycopg's ClientCursor), two statements in one Query.
    simple = psycopg.ClientCursor(a)
    simple.execute("EXECUTE add_one(1); EXECUTE add_one(2)")
    assert simple.fetchone()[0] == 2
    assert simple.nextset() and simple.fetchone()[0] == 3
    # In a transaction, and through the extended protocol (psycopg sends Parse/Bind/Execute).
    with a.transaction():
        assert a.execute("EXECUTE add_one(9)").fetchone()[0] == 10
    # An EXECUTE of a name the client never prepared fails as it does direct.
    try:
        a.execute("EXECUTE nothing_here(1)")
    except errors.InvalidSqlStatementName:
        pass
    else:
        raise AssertionError("EXECUTE of an unknown statement did not fail")
    simple.execute("DEALLOCATE add_one")
    try:
        a.execute("EXECUTE add_one(1)")
    except errors.InvalidSqlStatementName:
        pass
    else:
        raise AssertionError("EXECUTE after DEALLOCATE did not fail")
    a.execute("DEALLOCATE ALL")
    try:
        a.execute('EXECUTE "Mixed Case"')
    except errors.InvalidSqlStatementName:
        pass
    else:
        raise AssertionError("EXECUTE after DEALLOCATE ALL did not fail")
    # The name is free again.
    a.pgconn.prepare(b"add_one", b"select $1::int + 100")
    assert a.execute("EXECUTE add_one(1)").fetchone()[0] == 101
a.close()
b.close()
print("SQL EXECUTE and DEALLOCATE of protocol statements: ok")
