// `npm run bench -- <name> [options]`: runs one benchmark (or all) and writes
// its figures to bench/results/<name>-<time>.json as well as the console.
import { mkdir, writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { runCarrierBench } from './carrier.js';
import { runClusterBench } from './cluster.js';
import { runCompareBench } from './compare.js';
import { runCopyBench } from './copy.js';
import { runFailoverBench } from './failover.js';
import { runFrontBench } from './front.js';
import { runJournalBench } from './journal.js';
import { runPostgresBench } from './postgres.js';

const usage = `usage: npm run bench -- <benchmark> [options]

benchmarks:
  journal     group-commit throughput and append latency of the journal
  postgres    commit vs two-phase vs qsync's capture path vs capture by logical decoding; apply throughput by batch size
  cluster     one-row sync and async inserts through the client library on a local 3-node cluster
  failover    SIGKILL the leader 10 times: time to the first sync write on the new leader (1 s and 250 ms election timeouts)
  compare     qsync against PostgreSQL's own synchronous replication, side by side: sync and async one-row
              INSERTs at 1, 16 and 64 clients, runs alternating native/qsync; ratios, fsyncs per commit,
              sidecar peak memory, an SVG chart (about 8 minutes with the defaults)
  front       the SQL port's cost: reads by primary key straight to the leader's PostgreSQL, through the port, and
              through the port as linearizable reads; sync writes through the port and through the client library; the port's CPU per operation
  copy        initial copy of a table's existing rows to every node when it becomes sync: 100,000 and 1,000,000 narrow rows; then a fourth node joins and loads them by snapshot
  carrier     PostgreSQL's own replication as a carrier (docs/rfc/0026): physical synchronous replication against
              logical replication with synchronous subscribers, plain commits and PREPARE + COMMIT PREPARED
  all         every benchmark above but compare, one after another

options:
  --seconds N   seconds per case (default 5; compare: 10 per run)
  --pairs N     compare: rounds of native/qsync/sql runs per case; front: rounds of each pair of paths; carrier: rounds (default 3)
  --warmup N    compare: warm-up seconds per system (default 5)
  --dir PATH    where to put the benchmark's files (default: the system temp dir)
  --json PATH   where to write the results (default: bench/results/<benchmark>-<time>.json)
`;

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    seconds: { type: 'string' }, pairs: { type: 'string', default: '3' }, warmup: { type: 'string', default: '5' },
    dir: { type: 'string' }, json: { type: 'string' }, help: { type: 'boolean', short: 'h' },
  },
});

const name = positionals[0] ?? 'all';
const seconds = Number(values.seconds ?? (name === 'compare' ? 10 : 5));
const pairs = Number(values.pairs);
const warmup = Number(values.warmup);
if (values.help) {
  console.log(usage);
  process.exit(0);
}
for (const [flag, value] of [['seconds', seconds], ['pairs', pairs], ['warmup', warmup]] as const) {
  if (!Number.isFinite(value) || value <= 0) {
    console.error(`--${flag} must be a positive number, got ${String(values[flag])}\n\n${usage}`);
    process.exit(2);
  }
}
const stamp = new Date().toISOString().replace(/[:.]/g, '-');

const benches: Record<string, () => Promise<unknown>> = {
  journal: () => runJournalBench({ seconds, sizes: [200, 2048], callers: [1, 16, 256], ...(values.dir === undefined ? {} : { dir: values.dir }) }),
  postgres: () => runPostgresBench({ seconds, sessions: [1, 16, 64], batches: [1, 100, 1000] }),
  cluster: () => runClusterBench({ seconds, clients: [1, 16, 64] }),
  failover: () => runFailoverBench({ rounds: 10, electionTimeoutsMs: [1_000, 250] }),
  copy: () => runCopyBench({ rows: [100_000, 1_000_000] }),
  carrier: () => runCarrierBench({ seconds, clients: [1, 16, 64], rounds: Math.round(pairs) }),
  front: () => runFrontBench({ seconds, rounds: Math.round(pairs), clients: [1, 16, 64] }),
  compare: () => runCompareBench({ seconds, pairs: Math.round(pairs), clients: [1, 16, 64], warmupSeconds: warmup, chartPath: `bench/results/compare-${stamp}.svg` }),
};
benches.all = async () => ({ journal: await benches.journal?.(), postgres: await benches.postgres?.(), cluster: await benches.cluster?.(), failover: await benches.failover?.() });

await mkdir('bench/results', { recursive: true });
const bench = benches[name];
if (bench === undefined) {
  console.error(`unknown benchmark '${name}'\n\n${usage}`);
  process.exit(2);
}
const result = await bench();
const path = values.json ?? `bench/results/${name}-${stamp}.json`;
await writeFile(path, `${JSON.stringify({ benchmark: name, node: process.version, at: new Date().toISOString(), result }, null, 2)}\n`);
console.log(`results: ${path}`);
