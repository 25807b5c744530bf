"""Python drivers through a transaction-mode pgvalet route, with their statement caches on as
shipped: psycopg 3 (server-side prepared statements) and asyncpg (a named statement for every
query). More clients than backend connections, so statements must follow each client from one
backend connection to another.

    python statement_caches.py PORT PKI_DIR USER DATABASE
"""

import asyncio
import ssl
import sys

import asyncpg
import psycopg

PORT, PKI, USER, DB = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
CA, CRT, KEY = f"{PKI}/ca.crt", f"{PKI}/orders.crt", f"{PKI}/orders.key"


def psycopg_clients():
    conninfo = (
        f"host=127.0.0.1 port={PORT} dbname={DB} user={USER} sslmode=verify-full "
        f"sslrootcert={CA} sslcert={CRT} sslkey={KEY}"
    )
    # prepare_threshold=0: every query is prepared on first use (the default prepares on the
    # fifth; the same path, sooner).
    clients = [psycopg.connect(conninfo, autocommit=True, prepare_threshold=0) for _ in range(4)]
    pids = set()

    def query_all(n, skip=None):
        for i, c in enumerate(clients):
            if i == skip:
                continue
            total, pid = c.execute("select %s::int + %s::int, pg_backend_pid()", (n, i)).fetchone()
            assert total == n + i, (total, n, i)
            pids.add(pid)

    for n in range(40):
        query_all(n)
        holder = clients[n % 4]
        with holder.transaction():
            # One client holds a backend connection in a transaction, so the others' prepared
            # statements must run on the other one, wherever they were prepared.
            holder.execute("select 1").fetchone()
            query_all(n, skip=n % 4)
        with clients[n % 4].transaction():
            cur = clients[n % 4].execute("select %s::text || 'x'", ("a",), prepare=True)
            assert cur.fetchone()[0] == "ax"
            # Same transaction, same backend: the statement is prepared there.
            prepared = clients[n % 4].execute("select count(*) from pg_prepared_statements").fetchone()[0]
            assert prepared >= 1, "psycopg's statement was not prepared"
    for c in clients:
        c.close()
    return len(pids)


async def asyncpg_clients():
    tls = ssl.create_default_context(cafile=CA)
    tls.load_cert_chain(CRT, KEY)
    pool = await asyncpg.create_pool(
        host="127.0.0.1", port=int(PORT), user=USER, database=DB, ssl=tls, min_size=6, max_size=6
    )

    async def worker(i):
        for n in range(60):
            assert await pool.fetchval("select $1::int * 2", n + i) == 2 * (n + i)
            async with pool.acquire() as c:
                async with c.transaction():
                    rows = await c.fetch("select g from generate_series(1, $1::int) g", 3)
                    assert [r["g"] for r in rows] == [1, 2, 3]
                    stmt = await c.prepare("select $1::text || $2::text")
                    assert await stmt.fetchval("p", str(i)) == f"p{i}"

    await asyncio.gather(*(worker(i) for i in range(8)))
    await pool.close()


backends = psycopg_clients()
asyncio.run(asyncpg_clients())
print(f"psycopg {psycopg.__version__}: 4 clients on {backends} backend connections; asyncpg {asyncpg.__version__}: 8 workers on a pool of 6; ok")
