"""Preparing a statement name that is already in use, with psycopg's libpq calls (alone and in
pipelines) and asyncpg, recording what the server answers to every step. Run it direct and
through pgvalet: the outcomes must be the same. Postgres refuses such a Parse with 42P05
`prepared statement "NAME" already exists` (unless the statement's query fails first), skips the
rest of the pipeline up to its Sync, and keeps the statement prepared before.

    python duplicate_statements.py PORT PKI_DIR USER DATABASE [PASSWORD]

With PASSWORD it logs in with it (direct); otherwise with the client certificate (pgvalet).
Prints the outcomes as one JSON line.
"""

import asyncio
import json
import ssl
import sys

import asyncpg
import psycopg
from psycopg import pq

PORT, PKI, USER, DB = sys.argv[1:5]
PASSWORD = sys.argv[5] if len(sys.argv) > 5 else None
CA, CRT, KEY = f"{PKI}/ca.crt", f"{PKI}/orders.crt", f"{PKI}/orders.key"
if PASSWORD:
    CONNINFO = f"host=127.0.0.1 port={PORT} dbname={DB} user={USER} password={PASSWORD} sslmode=require"
else:
    CONNINFO = (
        f"host=127.0.0.1 port={PORT} dbname={DB} user={USER} sslmode=verify-full "
        f"sslrootcert={CA} sslcert={CRT} sslkey={KEY}"
    )


def outcome(result):
    """A result as [status, SQLSTATE, message, rows]."""
    code = result.error_field(pq.DiagnosticField.SQLSTATE)
    message = result.error_field(pq.DiagnosticField.MESSAGE_PRIMARY)
    rows = [
        [None if v is None else v.decode() for v in (result.get_value(i, j) for j in range(result.nfields))]
        for i in range(result.ntuples)
    ]
    return [pq.ExecStatus(result.status).name, code and code.decode(), message and message.decode(), rows]


def pipeline(conn, steps):
    """Sends `steps` (callables on the PGconn; "sync" for a Sync) in pipeline mode, then a Sync,
    and returns every result up to the last Sync's."""
    pg = conn.pgconn
    pg.enter_pipeline_mode()
    syncs = 1
    for step in steps:
        if step == "sync":
            pg.pipeline_sync()
            syncs += 1
        else:
            step(pg)
    pg.pipeline_sync()
    out = []
    while syncs:
        result = pg.get_result()
        if result is None:
            continue
        out.append(outcome(result))
        if result.status == pq.ExecStatus.PIPELINE_SYNC:
            syncs -= 1
    pg.exit_pipeline_mode()
    return out


def simple(conn, sql):
    return outcome(conn.pgconn.exec_(sql.encode()))


def prepare(name, sql):
    return lambda pg: pg.send_prepare(name.encode(), sql.encode())


def run(name, params=None):
    return lambda pg: pg.send_query_prepared(name.encode(), params)


def query(sql):
    return lambda pg: pg.send_query_params(sql.encode(), None)


def psycopg_cases():
    cases = {}
    conn = psycopg.connect(CONNINFO, autocommit=True)
    pg = conn.pgconn
    simple(conn, "create table if not exists dup_rows (a int)")
    simple(conn, "truncate dup_rows")

    # One at a time (PQprepare: a Parse and a Sync): the second is refused, the first stays.
    cases["sequential"] = [
        outcome(pg.prepare(b"s1", b"select 1")),
        outcome(pg.prepare(b"s1", b"select 'dup'")),
        outcome(pg.exec_prepared(b"s1", None)),
    ]
    # A pipeline: what came before the refusal is answered, what follows it up to the Sync is
    # skipped; the next Sync's part runs.
    cases["pipeline"] = pipeline(
        conn,
        [prepare("a", "select 'a'"), run("a"), prepare("s1", "select 'dup'"), run("s1"), "sync", query("select 'after'")],
    )
    cases["still the first"] = outcome(pg.exec_prepared(b"s1", None))
    # Two Parses of one new name in one pipeline.
    cases["twice in one pipeline"] = pipeline(conn, [prepare("t", "select 't'"), prepare("t", "select 'u'")])
    # The refusal aborts the pipeline's implicit transaction: the insert before it is undone.
    cases["implicit transaction"] = pipeline(conn, [query("insert into dup_rows values (1)"), prepare("s1", "select 2")])
    cases["implicit transaction rows"] = simple(conn, "select count(*) from dup_rows")
    # In a transaction block, the refusal aborts the transaction.
    simple(conn, "begin")
    cases["transaction block"] = pipeline(conn, [query("insert into dup_rows values (2)"), prepare("s1", "select 2")])
    cases["transaction block status"] = pq.TransactionStatus(pg.transaction_status).name
    cases["transaction block after"] = simple(conn, "select 1")
    simple(conn, "rollback")
    cases["transaction block rows"] = simple(conn, "select count(*) from dup_rows")
    # A duplicate whose query is wrong fails on the query first.
    cases["bad query"] = outcome(pg.prepare(b"s1", b"selec 1"))
    cases["unknown table"] = outcome(pg.prepare(b"s1", b"select * from no_such_table"))
    # In an aborted transaction, a Parse fails with 25P02 before the name is looked at.
    simple(conn, "begin")
    simple(conn, "select 1/0")
    cases["aborted transaction"] = outcome(pg.prepare(b"s1", b"select 2"))
    simple(conn, "rollback")
    # A Parse that failed made no statement: the name is free. (Not a PQprepare alone: in
    # transaction mode pgvalet answers a lone Parse and Sync itself, and reports a wrong query at
    # its first use; README, "Pooling".)
    cases["failed then again"] = pipeline(conn, [prepare("f", "select * from no_such_table"), query("select 1")]) + [
        outcome(pg.prepare(b"f", b"select 'f'")),
        outcome(pg.exec_prepared(b"f", None)),
    ]
    # So did one skipped after an error in its pipeline.
    cases["skipped then again"] = pipeline(conn, [query("select 1/0"), prepare("k", "select 'k'")]) + [
        outcome(pg.prepare(b"k", b"select 'k'")),
        outcome(pg.exec_prepared(b"k", None)),
    ]
    # Closed (Close message), deallocated (SQL), discarded: the name is free again.
    pg.prepare(b"c", b"select 'c1'")
    cases["closed"] = [
        outcome(pg.close_prepared(b"c")),
        outcome(pg.prepare(b"c", b"select 'c2'")),
        outcome(pg.exec_prepared(b"c", None)),
    ]
    pg.prepare(b"d", b"select 'd1'")
    cases["deallocated"] = [
        simple(conn, "deallocate d"),
        outcome(pg.prepare(b"d", b"select 'd2'")),
        outcome(pg.exec_prepared(b"d", None)),
    ]
    cases["discarded"] = [
        simple(conn, "discard all"),
        outcome(pg.prepare(b"s1", b"select 's1 again'")),
        outcome(pg.exec_prepared(b"s1", None)),
        outcome(pg.prepare(b"a", b"select 'a again'")),
    ]
    cases["usable"] = simple(conn, "select 'usable'")
    conn.close()
    return cases


async def asyncpg_case():
    """asyncpg's test_prepare_explicitly_named."""
    if PASSWORD:
        con = await asyncpg.connect(host="127.0.0.1", port=int(PORT), user=USER, password=PASSWORD, database=DB, ssl="require")
    else:
        tls = ssl.create_default_context(cafile=CA)
        tls.load_cert_chain(CRT, KEY)
        con = await asyncpg.connect(host="127.0.0.1", port=int(PORT), user=USER, database=DB, ssl=tls)
    out = []
    ps = await con.prepare("select 1", name="foobar")
    out.append(ps.get_name())
    out.append(await con.fetchval("EXECUTE foobar"))
    try:
        await con.prepare("select 1", name="foobar")
        out.append("prepared again")
    except asyncpg.PostgresError as e:
        out.append([type(e).__name__, e.sqlstate, str(e)])
    out.append(await ps.fetchval())
    out.append(await con.fetchval("select 2"))
    await con.close()
    return out


cases = psycopg_cases()
cases["asyncpg"] = asyncio.run(asyncpg_case())
print(json.dumps(cases, sort_keys=True))
