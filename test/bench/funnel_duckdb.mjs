// DuckDB side of test/bench/funnel.sh: load the bench events from CSV, then
// time each query given as NAME=FILE (best of the rounds) and print one line
// per query: "NAME SECONDS RESULT" (RESULT: the level histogram as text).
// Usage: node funnel_duckdb.mjs EVENTS.csv ROUNDS NAME=FILE...
import { DuckDBInstance } from '@duckdb/node-api';
import { readFileSync } from 'node:fs';

const [csv, roundsArg, ...queries] = process.argv.slice(2);
const rounds = Number(roundsArg);
const instance = await DuckDBInstance.create(':memory:');
const conn = await instance.connect();

let t0 = performance.now();
await conn.run(`CREATE TABLE bench_events AS SELECT * FROM read_csv('${csv}', header = true,
  columns = {'session_id': 'BIGINT', 'user_id': 'INTEGER', 'day': 'DATE', 'ts': 'TIMESTAMP', 'event_type': 'VARCHAR'})`);
const threads = (await conn.runAndReadAll("SELECT current_setting('threads')")).getRows()[0][0];
console.log(`load ${((performance.now() - t0) / 1000).toFixed(3)} threads=${threads}`);

for (const q of queries) {
  const [name, file] = q.split('=');
  const sql = readFileSync(file, 'utf8');
  let best = Infinity;
  let result = '';
  for (let i = 0; i < rounds; i++) {
    t0 = performance.now();
    const rows = (await conn.runAndReadAll(sql)).getRows();
    best = Math.min(best, (performance.now() - t0) / 1000);
    result = rows.map((r) => `${r[0]}:${r[1]}`).join(' ');
  }
  console.log(`${name} ${best.toFixed(3)} ${result}`);
}
