"""asyncpg's test_executemany_server_failure_during_writes, ROUNDS times: executemany of 128
rows, the third of which violates the primary key, the rest 32 KB each. asyncpg writes while it
reads; the server's error must reach it while it is still writing, so that it stops early.

    python executemany_early_error.py PORT PKI_DIR USER DATABASE ROUNDS [PASSWORD]

With PASSWORD it logs in with it (direct); otherwise with the client certificate (pgvalet).
"""

import asyncio
import ssl
import sys

import asyncpg

PORT, PKI, USER, DB, ROUNDS = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
PASSWORD = sys.argv[6] if len(sys.argv) > 6 else None
CA, CRT, KEY = f"{PKI}/ca.crt", f"{PKI}/orders.crt", f"{PKI}/orders.key"


async def main():
    if PASSWORD:
        con = await asyncpg.connect(
            host="127.0.0.1", port=int(PORT), user=USER, password=PASSWORD, database=DB, ssl="require"
        )
    else:
        tls = ssl.create_default_context(cafile=CA)
        tls.load_cert_chain(CRT, KEY)
        con = await asyncpg.connect(host="127.0.0.1", port=int(PORT), user=USER, database=DB, ssl=tls)
    await con.execute("create table if not exists exmany_early (a text, b int primary key)")
    early, stops = 0, []
    for _ in range(ROUNDS):
        await con.execute("truncate exmany_early")
        pos = 0

        def gen():
            nonlocal pos
            while pos < 128:
                pos += 1
                if pos < 3:
                    yield ("a", 0)
                else:
                    yield "a" * 32768, pos

        try:
            await con.executemany("insert into exmany_early values ($1, $2)", gen())
        except asyncpg.UniqueViolationError:
            pass
        else:
            raise AssertionError("executemany did not fail")
        assert await con.fetch("select b from exmany_early") == []
        stops.append(pos)
        early += pos < 128
    await con.close()
    print(f"rows written before the stop: {stops}")
    print(f"stopped early {early} times of {ROUNDS}")


asyncio.run(main())
