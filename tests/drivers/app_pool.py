"""An application's own connection pool through a session-mode pgvalet route, as apps run it
against Postgres: an asyncpg pool of 30 connections, all of them busy at once, plus one more
connection that LISTENs.

    python app_pool.py PORT PKI_DIR USER DATABASE
"""

import asyncio
import ssl
import sys

import asyncpg

PORT, PKI, USER, DB = sys.argv[1:5]
CA, CRT, KEY = f"{PKI}/ca.crt", f"{PKI}/orders.crt", f"{PKI}/orders.key"
SIZE = 30


async def main():
    tls = ssl.create_default_context(cafile=CA)
    tls.load_cert_chain(CRT, KEY)
    args = dict(host="127.0.0.1", port=int(PORT), user=USER, database=DB, ssl=tls)
    listener = await asyncpg.connect(**args)
    heard = asyncio.get_running_loop().create_future()
    await listener.add_listener("app_pool", lambda *a: heard.done() or heard.set_result(a[3]))
    pool = await asyncpg.create_pool(min_size=SIZE, max_size=SIZE, **args)

    async def busy(i):
        async with pool.acquire() as c:
            return await c.fetchval("select pg_backend_pid() from pg_sleep(0.5)")

    pids = await asyncio.wait_for(asyncio.gather(*(busy(i) for i in range(SIZE))), 20)
    assert len(set(pids)) == SIZE, f"{len(set(pids))} backends for {SIZE} busy connections"
    await pool.execute("notify app_pool, 'done'")
    assert await asyncio.wait_for(heard, 5) == "done"
    await pool.close()
    await listener.close()
    print(f"asyncpg pool of {SIZE} busy at once, plus a listener: ok")


asyncio.run(main())
