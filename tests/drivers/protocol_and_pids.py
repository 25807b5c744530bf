"""What a driver reads about its own connection through pgvalet, as it reads it direct:
the protocol version it negotiated (libpq 18 asks for 3.2), the backend process id of its cancel
key, the pid of its own notifications, and a cancel with the key it holds.

    python protocol_and_pids.py PORT PKI_DIR USER DATABASE MODE

MODE is `session` or `transaction`: in session mode `pg_backend_pid()` must agree with the key's
process id too, and another session can terminate this one by that pid; in transaction mode the
backend changes between transactions, so it need not. In both, a session that terminates its own
backend ends.
"""

import asyncio
import ssl
import sys
import threading
import time

import asyncpg
import psycopg
from psycopg import errors

PORT, PKI, USER, DB, MODE = sys.argv[1:6]
CA, CRT, KEY = f"{PKI}/ca.crt", f"{PKI}/orders.crt", f"{PKI}/orders.key"
BASE = (
    f"host=127.0.0.1 port={PORT} dbname={DB} user={USER} sslmode=verify-full "
    f"sslrootcert={CA} sslcert={CRT} sslkey={KEY}"
)


def cancel_a_sleep(conn, how):
    """Runs pg_sleep(30) and cancels it from another thread; returns the seconds it took. The
    cancel call itself must succeed too: libpq's cancel API reads the server's side of the
    cancel connection to its end, TLS close_notify included."""
    started = time.monotonic()
    failures = []

    def cancel():
        try:
            how()
        except Exception as e:  # noqa: BLE001 - reported below, in the test's thread
            failures.append(e)

    timer = threading.Timer(0.5, cancel)
    timer.start()
    try:
        conn.execute("select pg_sleep(30)")
    except errors.QueryCanceled:
        pass
    else:
        raise AssertionError("pg_sleep was not cancelled")
    finally:
        timer.join()
    assert not failures, f"the cancel call failed: {failures[0]!r}"
    took = time.monotonic() - started
    assert took < 10, f"the cancel took {took:.1f} s"
    # The session goes on after the cancel.
    assert conn.execute("select 41 + 1").fetchone()[0] == 42
    return took


def protocol(extra, want):
    with psycopg.connect(f"{BASE} {extra}", autocommit=True) as conn:
        got = conn.pgconn.full_protocol_version
        assert got == want, f"{extra!r}: protocol {got}, expected {want}"
        # libpq's own cancel (PQcancelCreate: the key it was given, of whatever length) ...
        cancel_a_sleep(conn, conn.cancel_safe)
        # ... and the older PQcancel path psycopg keeps for compatibility.
        cancel_a_sleep(conn, conn.cancel)
        key_pid = conn.info.backend_pid
        if MODE == "session":
            assert conn.execute("select pg_backend_pid()").fetchone()[0] == key_pid
    print(f"{extra or 'default'}: protocol {want}, cancel ok")


def psycopg_notify():
    with psycopg.connect(BASE, autocommit=True) as conn:
        conn.execute("listen pgvalet_pids")
        conn.execute("notify pgvalet_pids, 'mine'")
        notes = list(conn.notifies(timeout=5, stop_after=1))
        assert notes, "no notification arrived"
        assert notes[0].payload == "mine"
        assert notes[0].pid == conn.info.backend_pid, (notes[0].pid, conn.info.backend_pid)
        if MODE == "session":
            assert conn.execute("select pg_backend_pid()").fetchone()[0] == notes[0].pid
    print("psycopg: own notification carries the key's pid")


async def asyncpg_notify():
    tls = ssl.create_default_context(cafile=CA)
    tls.load_cert_chain(CRT, KEY)
    conn = await asyncpg.connect(host="127.0.0.1", port=int(PORT), user=USER, database=DB, ssl=tls)
    got = asyncio.get_running_loop().create_future()
    await conn.add_listener("pgvalet_pids", lambda c, pid, ch, payload: got.set_result(pid))
    await conn.execute("notify pgvalet_pids, 'mine'")
    pid = await asyncio.wait_for(got, 5)
    assert pid == conn.get_server_pid(), (pid, conn.get_server_pid())
    if MODE == "session":
        assert await conn.fetchval("select pg_backend_pid()") == pid
    await conn.close()
    print("asyncpg: own notification carries the key's pid")


def session_gone(conn):
    """Whether the connection's session has ended, as a driver finds out at its next query."""
    try:
        conn.execute("select 1")
    except psycopg.OperationalError:
        return True
    return False


def terminate():
    # A session that terminates its own backend ends, as it does direct.
    conn = psycopg.connect(BASE, autocommit=True)
    try:
        conn.execute("select pg_terminate_backend(pg_backend_pid())")
    except psycopg.OperationalError:
        pass
    assert session_gone(conn), "the session went on after its own backend was terminated"
    if MODE == "session":
        # Another session terminates it by the pid its driver reports.
        victim = psycopg.connect(BASE, autocommit=True)
        with psycopg.connect(BASE, autocommit=True) as killer:
            done = killer.execute("select pg_terminate_backend(%s)", (victim.info.backend_pid,))
            assert done.fetchone()[0] is True
        assert session_gone(victim), "the session went on after its backend was terminated"
    print("pg_terminate_backend ends the session")


protocol("", 30000)
protocol("max_protocol_version=3.2", 30002)
protocol("min_protocol_version=3.2 max_protocol_version=3.2", 30002)
protocol("max_protocol_version=latest sslnegotiation=direct", 30002)
psycopg_notify()
asyncio.run(asyncpg_notify())
terminate()
print(f"{MODE}: ok")
