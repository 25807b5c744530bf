"""A cancel must be done when the driver is told it is done. asyncpg (as libpq's blocking
cancel) sends a CancelRequest on a connection of its own and waits for the server to close it
before its next query; Postgres closes it only once it has signalled the backend. If the close
came sooner, the signal could land on the next query instead.

    python cancel_order.py PORT PKI_DIR USER DATABASE
"""

import asyncio
import ssl
import sys

import asyncpg

PORT, PKI, USER, DB = sys.argv[1:5]
CA, CRT, KEY = f"{PKI}/ca.crt", f"{PKI}/orders.crt", f"{PKI}/orders.key"
ROUNDS = 20


async def main():
    tls = ssl.create_default_context(cafile=CA)
    tls.load_cert_chain(CRT, KEY)
    con = await asyncpg.connect(host="127.0.0.1", port=int(PORT), user=USER, database=DB, ssl=tls)
    hit = 0
    for _ in range(ROUNDS):
        statement = await con.prepare("select pg_sleep(20)")
        task = asyncio.create_task(statement.fetch())
        await asyncio.sleep(0.05)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        try:
            await con.fetchval("select pg_sleep(0.2)")
        except asyncpg.QueryCanceledError:
            hit += 1
    await con.close()
    assert hit == 0, f"{hit} of {ROUNDS} queries after a cancelled one were cancelled too"
    print(f"{ROUNDS} cancels, no query after them cancelled: ok")


asyncio.run(main())
