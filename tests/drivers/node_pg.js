// node-postgres through pgvalet as Node.js applications use it: `ssl: {ca, cert, key}` with the
// server's name checked, no password. Three clients share one table: named statements (the
// same names in every client), 1000 inserts in a transaction while another client runs 1000
// in autocommit, a transaction, a failing named statement, and an error in the middle of a
// transaction followed by a rollback. In transaction mode the route has two backend connections
// for the three clients, so each client's statements must follow it from one backend
// connection to the other.
//
//     node node_pg.js PORT PKI_DIR USER DATABASE session|transaction
//
// Exits non-zero on the first result that is not what Postgres gives directly.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const pg = require('pg');

const [PORT, PKI, USER, DB, MODE] = process.argv.slice(2);
if (!MODE || !['session', 'transaction'].includes(MODE)) {
  console.error('usage: node node_pg.js PORT PKI_DIR USER DATABASE session|transaction');
  process.exit(2);
}
const CLIENTS = 3;
const ROUNDS = 12;
const BATCH = 1000;
const TABLE = `node_pg_${MODE}`;
const ssl = {
  ca: fs.readFileSync(path.join(PKI, 'ca.crt')),
  cert: fs.readFileSync(path.join(PKI, 'orders.crt')),
  key: fs.readFileSync(path.join(PKI, 'orders.key')),
};

const DOUBLE = 'select $1::int * 2 as node_double, pg_backend_pid() as pid';
const INSERT = `insert into ${TABLE} (id, v) values ($1, $2)`;

/** The query must fail with `code`. */
async function expectState(code, promise) {
  try {
    await promise;
  } catch (e) {
    assert.equal(e.code, code, `expected SQLSTATE ${code}, got ${e.code}: ${e.message}`);
    return;
  }
  assert.fail(`expected SQLSTATE ${code}, the query succeeded`);
}

/** The single value of a one-row, one-column result. */
async function one(client, query, values) {
  const res = await client.query(query, values);
  assert.equal(res.rows.length, 1, `rows of ${JSON.stringify(query)}`);
  return Object.values(res.rows[0])[0];
}

/** How many statements prepared on the backend the client uses now contain `marker`. */
function preparedHere(client, marker) {
  return one(
    client,
    'select count(*)::int from pg_prepared_statements where strpos(statement, $1) > 0',
    [marker],
  );
}

async function main() {
  const clients = [];
  for (let i = 0; i < CLIENTS; i++) {
    const c = new pg.Client({
      host: '127.0.0.1',
      port: Number(PORT),
      user: USER,
      database: DB,
      application_name: `node-pg-${MODE}`,
      ssl,
    });
    await c.connect();
    clients.push(c);
  }
  const [a, b, c] = clients;
  assert.equal(await one(a, 'select 1 as one'), 1);
  await a.query(`drop table if exists ${TABLE}`);
  await a.query(`create table ${TABLE} (id int primary key, v text not null)`);

  // Named statements, prepared once per client (node-postgres sends the Parse only the first
  // time) and all called "double". In each round one client holds a transaction (a backend
  // connection of its own in transaction mode) while the others run theirs.
  const pids = clients.map(() => new Set());
  for (let round = 0; round < ROUNDS; round++) {
    const holder = clients[round % CLIENTS];
    await holder.query('begin');
    assert.equal(await one(holder, 'select 41 + 1 as v'), 42);
    for (let i = 0; i < CLIENTS; i++) {
      const n = round * 10 + i;
      const res = await clients[i].query({ name: 'double', text: DOUBLE, values: [n] });
      assert.equal(res.rows.length, 1);
      assert.equal(res.rows[0].node_double, 2 * n, `client ${i} round ${round}`);
      pids[i].add(res.rows[0].pid);
    }
    // The holder's statement is prepared on the backend its transaction runs on, wherever
    // node-postgres first prepared it.
    assert.ok((await preparedHere(holder, 'node_double')) >= 1, `round ${round}: "double" is not prepared on the holder's backend`);
    await holder.query('commit');
  }
  const allPids = new Set(pids.flatMap((p) => [...p]));
  if (MODE === 'transaction') {
    assert.equal(allPids.size, 2, `${CLIENTS} clients should share 2 backends: ${[...allPids]}`);
    assert.ok(pids.some((p) => p.size > 1), 'no client ran its statement on more than one backend');
  } else {
    assert.ok(pids.every((p) => p.size === 1), 'session mode: a client changed backends');
    assert.equal(allPids.size, CLIENTS, 'session mode: clients share a backend');
  }

  // 1000 inserts by one client in a transaction while another runs 1000 in autocommit (each its
  // own transaction, on whichever backend connection is free), the two clients at once.
  const inTxn = (async () => {
    await b.query('begin');
    for (let i = 1; i <= BATCH; i++) {
      const res = await b.query({ name: 'ins', text: INSERT, values: [i, `row ${i}`] });
      assert.equal(res.rowCount, 1);
    }
    const own = `select count(*)::int from ${TABLE} where id <= ${BATCH}`;
    assert.equal(await one(b, own), BATCH, 'own rows in the transaction');
    await b.query('commit');
  })();
  const autocommit = (async () => {
    for (let i = BATCH + 1; i <= 2 * BATCH; i++) {
      const res = await c.query({ name: 'ins', text: INSERT, values: [i, `row ${i}`] });
      assert.equal(res.rowCount, 1);
    }
  })();
  await Promise.all([inTxn, autocommit]);
  assert.equal(Number(await one(a, `select count(*) from ${TABLE}`)), 2 * BATCH, 'rows after the batches');
  assert.equal(Number(await one(a, `select sum(id) from ${TABLE}`)), BATCH * (2 * BATCH + 1), 'ids after the batches');

  // A transaction: its rows are invisible to others until commit, then visible.
  await a.query('begin');
  for (let i = 0; i < 10; i++) {
    const res = await a.query({ name: 'ins', text: INSERT, values: [5000 + i, 'txn'] });
    assert.equal(res.rowCount, 1);
  }
  const txnRows = `select count(*)::int from ${TABLE} where v = 'txn'`;
  assert.equal(await one(a, txnRows), 10, 'own rows inside the transaction');
  assert.equal(await one(b, txnRows), 0, 'uncommitted rows visible to another client');
  await a.query('commit');
  assert.equal(await one(b, txnRows), 10, 'committed rows seen by another client');

  // A named statement that fails to prepare, twice, and the client goes on.
  const bad = { name: 'bad', text: `select no_such_column from ${TABLE}` };
  await expectState('42703', c.query(bad));
  await expectState('42703', c.query(bad));
  assert.equal((await c.query({ name: 'double', text: DOUBLE, values: [4] })).rows[0].node_double, 8);

  // An error in the middle of a transaction: 22012, then 25P02 until the rollback, then nothing
  // of the transaction stays and the client works again.
  await a.query('begin');
  assert.equal((await a.query(`insert into ${TABLE} (id, v) values (9000, 'doomed')`)).rowCount, 1);
  await expectState('22012', a.query(`select 1 / (select count(*) - count(*) from ${TABLE})`));
  await expectState('25P02', a.query('select 1'));
  await expectState('25P02', a.query({ name: 'double', text: DOUBLE, values: [1] }));
  await a.query('rollback');
  const doomed = `select count(*)::int from ${TABLE} where id = 9000`;
  assert.equal(await one(a, doomed), 0, 'the rolled back row stayed');
  assert.equal(await one(b, doomed), 0, 'the rolled back row stayed (other client)');
  for (let i = 0; i < 3; i++) {
    const res = await a.query({ name: 'double', text: DOUBLE, values: [21] });
    assert.equal(res.rows[0].node_double, 42, 'the named statement after the rollback');
  }
  // An error in autocommit leaves nothing behind either.
  await expectState('42P01', b.query('select count(*) from no_such_table'));
  assert.equal(Number(await one(b, `select count(*) from ${TABLE}`)), 2 * BATCH + 10, 'rows at the end');

  await a.query(`drop table ${TABLE}`);
  for (const client of clients) await client.end();
  const version = JSON.parse(fs.readFileSync(path.join(__dirname, 'node_modules/pg/package.json'))).version;
  console.log(
    `node-postgres ${version} ${MODE}: ${CLIENTS} clients on ${allPids.size} backend connections; ` +
      `named statements, 2 x ${BATCH} inserts, transaction, errors and rollback: ok`,
  );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
