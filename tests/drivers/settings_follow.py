"""A client's settings through a transaction-mode route, with psycopg: what its startup packet
asks (`options=-c …`) and what it SETs of the settings the server reports (TimeZone,
client_encoding, standard_conforming_strings, DateStyle) stay true on every backend connection it
lands on, and never leak to another client's.

    python settings_follow.py PORT PKI_DIR USER DATABASE
"""

import sys

import psycopg

PORT, PKI, USER, DB = sys.argv[1:5]
CA, CRT, KEY = f"{PKI}/ca.crt", f"{PKI}/orders.crt", f"{PKI}/orders.key"
BASE = (
    f"host=127.0.0.1 port={PORT} dbname={DB} user={USER} sslmode=verify-full "
    f"sslrootcert={CA} sslcert={CRT} sslkey={KEY}"
)


def show(conn, name):
    return conn.execute(f"show {name}").fetchone()[0]


def reported(conn, name):
    value = conn.pgconn.parameter_status(name.encode())
    return value.decode() if value is not None else None


a = psycopg.connect(f"{BASE} options='-c statement_timeout=4321 -c search_path=pgvalet_a,public'", autocommit=True)
b = psycopg.connect(BASE, autocommit=True)
assert show(a, "statement_timeout") == "4321ms", show(a, "statement_timeout")
assert show(a, "search_path").replace(" ", "") == "pgvalet_a,public", show(a, "search_path")
default_tz = show(b, "TimeZone")
assert show(b, "statement_timeout") == "0", "another client's options leaked"

a.execute("SET TimeZone = 'Asia/Tokyo'")
a.execute("SET client_encoding = 'LATIN1'")
a.execute("SET standard_conforming_strings = off")
a.execute("SET DateStyle = 'German'")
# Settings the server does not report: a lone SET of one plain value is carried too (extended
# protocol here, simple protocol with ClientCursor), once its ReadyForQuery shows it took.
a.execute("SET lock_timeout = 2345")
psycopg.ClientCursor(a).execute("SET work_mem = '8MB'")
try:
    a.execute("SET work_mem = 'lots'")
except psycopg.errors.InvalidParameterValue:
    pass
else:
    raise AssertionError("a bad SET did not fail")
assert reported(a, "TimeZone") == "Asia/Tokyo"
first_pid = a.execute("select pg_backend_pid()").fetchone()[0]

# b holds the connection a used, so a's next transaction runs on another one.
with b.transaction():
    assert b.execute("select pg_backend_pid()").fetchone()[0] == first_pid, "b took a's connection"
    assert show(b, "TimeZone") == default_tz, "a's TimeZone leaked to b"
    assert show(b, "standard_conforming_strings") == "on"
    assert show(b, "DateStyle") == "ISO, MDY"
    assert show(b, "statement_timeout") == "0"
    assert show(b, "lock_timeout") == "0", "a's SET leaked to b"
    assert show(b, "work_mem") == "4MB", "a's SET leaked to b"
    with a.transaction():
        assert a.execute("select pg_backend_pid()").fetchone()[0] != first_pid, "a did not move"
        assert show(a, "TimeZone") == "Asia/Tokyo"
        assert show(a, "client_encoding") == "LATIN1"
        assert show(a, "standard_conforming_strings") == "off"
        assert show(a, "DateStyle") == "German, DMY"
        assert show(a, "statement_timeout") == "4321ms", "a's options did not follow it"
        assert show(a, "lock_timeout") == "2345ms", "a's SET did not follow it"
        assert show(a, "work_mem") == "8MB", "a's SET (not the failed one) did not follow it"
        # psycopg decodes with the encoding the server reported: the backend must send LATIN1.
        assert a.execute("select 'é'::text").fetchone()[0] == "é"
        assert a.execute("select '2024-03-01'::date::text").fetchone()[0] == "01.03.2024"

# Back to the defaults, by RESET: followed as well.
a.execute("RESET TimeZone")
assert reported(a, "TimeZone") == default_tz
with b.transaction():
    with a.transaction():
        assert show(a, "TimeZone") == default_tz
a.close()
b.close()
print("settings follow the client: ok")
