// node-postgres' own quick-disconnect test, many times over: a client ended right after
// connect() is called. node-postgres then writes its Terminate ahead of its SSLRequest, the
// server sees a first packet whose length word is out of range, and Postgres closes without a
// word. Any answer reaches node-postgres as "There was an error establishing an SSL connection"
// (connect() rejected, or an 'error' event) for a client the application has already ended.
//
//     node node_quick_disconnect.js PORT PKI_DIR USER DATABASE [PASSWORD]
//
// With PASSWORD it logs in with it and no client certificate (direct to Postgres). Exits
// non-zero when any client reported an error.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const pg = require('pg');

const [PORT, PKI, USER, DB, PASSWORD] = process.argv.slice(2);
const ROUNDS = 20;
const ssl = { ca: fs.readFileSync(path.join(PKI, 'ca.crt')) };
if (!PASSWORD) {
  ssl.cert = fs.readFileSync(path.join(PKI, 'orders.crt'));
  ssl.key = fs.readFileSync(path.join(PKI, 'orders.key'));
}

async function main() {
  const errors = [];
  const ended = [];
  for (let i = 0; i < ROUNDS; i++) {
    const client = new pg.Client({
      host: '127.0.0.1',
      port: Number(PORT),
      user: USER,
      database: DB,
      password: PASSWORD,
      ssl,
    });
    client.on('error', (e) => errors.push(`error event: ${e.message}`));
    // Neither resolved nor rejected when the server closes without a word, as direct.
    client.connect().catch((e) => errors.push(`connect: ${e.message}`));
    ended.push(client.end());
  }
  await Promise.all(ended);
  // An answer the server sent arrives before its close; give a late one time to show.
  await new Promise((resolve) => setTimeout(resolve, 300));
  if (errors.length > 0) {
    console.error(`${errors.length} errors for ${ROUNDS} ended clients:\n${errors.join('\n')}`);
    process.exit(1);
  }
  console.log(`${ROUNDS} clients ended while connecting, no error`);
  process.exit(0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
