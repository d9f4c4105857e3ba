// PostgreSQL-layer benchmark, on one embedded server:
//
// 1. One-row INSERT transactions at 1, 16 and 64 concurrent sessions, five ways:
//    `commit` (plain, local table), `2pc` (plain PREPARE + COMMIT PREPARED),
//    `qsync` (sync table: fence + capture triggers, capture, applied lsn,
//    PREPARE, COMMIT PREPARED, each its own round trip), `pipe` (the same on
//    a pipelining connection: BEGIN and the INSERT in one round trip, as the
//    sidecar runs it), and `open` (the alternative of docs/rfc/0013: the
//    transaction held open, not prepared, and committed with
//    synchronous_commit=off), and `decode` (docs/rfc/0017: capture by
//    logical decoding, measured before it is built: a sync table with its
//    fence but no capture triggers; the statements, then the applied mark
//    and PREPARE in one round trip, then the wait until a Node consumer of
//    a two-phase pgoutput slot has decoded that PREPARE, then COMMIT
//    PREPARED). Reports tx/s, p50/p99, WAL fsyncs per transaction
//    (pg_stat_io), and CPU per transaction of PostgreSQL (every backend and
//    the walsender) and of this process (the load generator, and the
//    decoding consumer in `decode`). Every connection corks its writes, as
//    the sidecar's do. The server runs with wal_level = logical in every
//    mode, so that the modes compare in one run.
// 2. Apply throughput in rows/s for records of 1, 100 and 1000 rows, committed
//    and prepared then committed (a sync table), and through last-writer-wins
//    (an async table) one record at a time and 50 records to a batch, as a
//    follower's apply queue runs them (docs/rfc/0022).
import pg from 'pg';
import { gidFor } from '../src/core/gid.js';
import type { TxnRecord } from '../src/core/record.js';
import type { Lsn, ReplicaId, Term } from '../src/core/types.js';
import { Applier, capture, commitPrepared, launchPostgres, migrate, PgLeaderTransaction, readCaptureKey, setTableMode } from '../src/postgres/index.js';
import { leaderWrite, PREPARING } from '../src/sidecar/leader-write.js';
import { corkWrites } from '../src/postgres/cork.js';
import { PreparedStream } from './decoding.js';
import { closedLoop, cpuSeconds, tree } from './stats.js';

export interface PostgresBenchOptions {
  readonly seconds: number;
  readonly sessions: readonly number[];
  readonly batches: readonly number[];
}

type WriteMode = 'commit' | '2pc' | 'qsync' | 'pipe' | 'open' | 'decode';
const WRITE_MODES: readonly WriteMode[] = ['commit', '2pc', 'qsync', 'pipe', 'open', 'decode'];

export interface WriteRow {
  readonly mode: WriteMode;
  readonly sessions: number;
  readonly txPerSec: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly walFsyncsPerTx: number;
  /** CPU per transaction: PostgreSQL's processes, and this process (load generator, decoding consumer). */
  readonly pgCpuUsPerTx: number;
  readonly benchCpuUsPerTx: number;
}

/** How a case applies its records: one by one on a sync table (committed, or prepared then committed), or through last-writer-wins. */
type ApplyEnding = 'commit' | 'prepare+commit' | 'lww' | 'lww x50';

export interface ApplyRow {
  readonly batchRows: number;
  readonly ending: ApplyEnding;
  readonly rowsPerSec: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
}

const CLUSTER = 'bench';

export async function walFsyncs(client: pg.Client): Promise<number> {
  await client.query('SELECT pg_stat_clear_snapshot()');
  const { rows } = await client.query<{ n: string }>(`SELECT coalesce(sum(fsyncs), 0) AS n FROM pg_stat_io WHERE object = 'wal'`);
  return Number(rows[0]?.n ?? 0);
}

/** CPU seconds of a PostgreSQL server's processes (its exited backends included) and of this process. */
function cpuNow(postmaster: number): { pg: number; bench: number } {
  const usage = process.cpuUsage();
  return { pg: tree(postmaster).reduce((sum, pid) => sum + cpuSeconds(pid), 0), bench: (usage.user + usage.system) / 1e6 };
}

async function writeCase(connectionString: string, postmaster: number, monitor: pg.Client, mode: WriteMode, sessions: number, seconds: number, ids: { next: number }, lsns: { next: number }): Promise<WriteRow> {
  const slot = `bench_decode_${sessions}`;
  const stream = mode === 'decode' ? await PreparedStream.open(connectionString, slot, 'bench_decode') : null;
  const clients = await Promise.all(Array.from({ length: sessions }, async () => {
    const client = new pg.Client({ connectionString, pipeline: mode === 'pipe' || mode === 'open' || mode === 'decode' });
    await client.connect();
    corkWrites(client);
    return client;
  }));
  const captureKey = await readCaptureKey(monitor);
  const before = await walFsyncs(monitor);
  const cpuBefore = cpuNow(postmaster);
  const run = await closedLoop(sessions, seconds, async (caller) => {
    const client = clients[caller] as pg.Client;
    const id = (ids.next += 1);
    if (mode === 'commit') {
      await client.query('BEGIN');
      await client.query('INSERT INTO plain_items VALUES ($1, $2, now())', [id, 'payload']);
      await client.query('COMMIT');
      return;
    }
    const lsn = (lsns.next += 1) as Lsn;
    const gid = gidFor(CLUSTER, 1 as ReplicaId, lsn);
    if (mode === 'open') {
      await Promise.all([
        client.query(`BEGIN; SET LOCAL qsync.term = '1'; SET LOCAL synchronous_commit = off`),
        client.query('INSERT INTO sync_items VALUES ($1, $2, now())', [id, 'payload']),
      ]);
      // Its own round trip, as in the sidecar: the write's time is read once the statements ran.
      const captured = await capture(client, { captureKey, time: lsn, replica: 1 as ReplicaId, lsn, idempotencyKey: null });
      if (!captured.sync) throw new Error('open: the INSERT was not captured as sync');
      await client.query('COMMIT');
      return;
    }
    if (mode === 'decode') {
      // The statements under the term, then (lsn reserved) the applied mark and PREPARE together.
      await Promise.all([
        client.query(`BEGIN; SET LOCAL qsync.term = '1'`),
        client.query('INSERT INTO decode_items VALUES ($1, $2, now())', [id, 'payload']),
      ]);
      await Promise.all([
        client.query('INSERT INTO qsync.applied (replica_id, lsn) VALUES (1, $1)', [lsn]),
        client.query(`PREPARE TRANSACTION '${gid}'`),
      ]);
      const decoded = await (stream as PreparedStream).prepared(gid);
      if (decoded.changes.length !== 1) throw new Error(`decode: ${gid} decoded as ${JSON.stringify(decoded.changes)}`);
    } else if (mode === '2pc') {
      await client.query('BEGIN');
      await client.query('INSERT INTO plain_items VALUES ($1, $2, now())', [id, 'payload']);
      await client.query(`PREPARE TRANSACTION '${gid}'`);
    } else {
      const tx = new PgLeaderTransaction(client, { term: 1 as Term, replica: 1 as ReplicaId, idempotencyKey: null }, captureKey);
      await leaderWrite(tx, { reserve: () => ({ lsn, gid, time: lsn }), journal: () => Promise.resolve(), prepareSent: () => undefined, ...PREPARING }, async (c) => {
        await c.query('INSERT INTO sync_items VALUES ($1, $2, now())', [id, 'payload']);
      });
    }
    await commitPrepared(client, gid);
  });
  // Backends report their I/O statistics when they exit.
  await Promise.all(clients.map((c) => c.end()));
  await new Promise((r) => setTimeout(r, 300));
  const cpuAfter = cpuNow(postmaster);
  await stream?.close(connectionString, slot);
  const fsyncs = (await walFsyncs(monitor)) - before;
  const perTx = (s: number): number => (s * 1e6) / Math.max(1, run.ops);
  return {
    mode, sessions, txPerSec: run.ops / run.seconds, p50Ms: run.latency.p50Ms(), p99Ms: run.latency.p99Ms(), walFsyncsPerTx: fsyncs / Math.max(1, run.ops),
    pgCpuUsPerTx: perTx(cpuAfter.pg - cpuBefore.pg), benchCpuUsPerTx: perTx(cpuAfter.bench - cpuBefore.bench),
  };
}

async function applyCase(applier: Applier, batchRows: number, ending: ApplyEnding, seconds: number, ids: { next: number }, lsns: { next: number }, monitor: pg.Client): Promise<ApplyRow> {
  const prepared = ending === 'prepare+commit';
  const lww = ending === 'lww' || ending === 'lww x50';
  const records = ending === 'lww x50' ? 50 : 1;
  const next = (): TxnRecord => {
    const first = ids.next + 1;
    ids.next += batchRows;
    const rows = JSON.stringify(Array.from({ length: batchRows }, (_, i) => ({ id: first + i, payload: `row ${first + i}`, at: '2026-11-22T08:00:00Z' })));
    const lsn = (lsns.next += 1) as Lsn;
    return {
      kind: 'txn', replica: 2 as ReplicaId, lsn, term: 1 as Term, time: lsn, gid: gidFor(CLUSTER, 2 as ReplicaId, lsn),
      sync: prepared, idempotencyKey: null, changes: [{ table: lww ? 'public.apply_async_items' : 'public.apply_items', op: 'insert', rows }],
    };
  };
  const run = await closedLoop(1, seconds, async () => {
    if (lww) {
      await applier.applyBatch(Array.from({ length: records }, next), [], false);
      return;
    }
    const record = next();
    await applier.apply(record, { prepare: prepared });
    if (prepared) await commitPrepared(monitor, record.gid);
  });
  return { batchRows, ending, rowsPerSec: (run.ops * batchRows * records) / run.seconds, p50Ms: run.latency.p50Ms(), p99Ms: run.latency.p99Ms() };
}

export async function runPostgresBench(options: PostgresBenchOptions): Promise<{ writes: WriteRow[]; applies: ApplyRow[] }> {
  const server = await launchPostgres({ settings: { max_connections: 200, wal_level: 'logical', max_replication_slots: 4, max_wal_senders: 4 } });
  const monitor = new pg.Client({ connectionString: server.connectionString });
  try {
    await monitor.connect();
    await migrate(monitor);
    await monitor.query(`CREATE TABLE plain_items (id bigint PRIMARY KEY, payload text, at timestamptz);
      CREATE TABLE sync_items (id bigint PRIMARY KEY, payload text, at timestamptz);
      CREATE TABLE apply_items (id bigint PRIMARY KEY, payload text, at timestamptz);
      CREATE TABLE apply_async_items (id bigint PRIMARY KEY, payload text, at timestamptz);
      CREATE TABLE decode_items (id bigint PRIMARY KEY, payload text, at timestamptz);
      UPDATE qsync.node SET replica_id = 1, role = 'leader', term = 1, leader_id = 1`);
    await setTableMode(monitor, 'sync_items', 'sync');
    await setTableMode(monitor, 'apply_items', 'sync');
    await setTableMode(monitor, 'apply_async_items', 'async');
    // decode: the fence stays, the capture triggers go (decoding takes the rows).
    await setTableMode(monitor, 'decode_items', 'sync');
    await monitor.query(`DROP TRIGGER qsync_capture_insert ON decode_items; DROP TRIGGER qsync_capture_update ON decode_items;
      DROP TRIGGER qsync_capture_delete ON decode_items; CREATE PUBLICATION bench_decode FOR TABLE decode_items`);
    const postmaster = await server.pid();
    if (postmaster === null) throw new Error('the bench server has no postmaster pid');
    const ids = { next: 0 };
    const lsns = { next: 0 };

    console.log(`PostgreSQL ${server.port}: one-row INSERT transactions, ${options.seconds}s each`);
    console.log('mode    sessions       tx/s   p50 ms   p99 ms  WAL fsyncs/tx  PG CPU us/tx  bench CPU us/tx');
    const writes: WriteRow[] = [];
    for (const sessions of options.sessions) {
      for (const mode of WRITE_MODES) {
        const row = await writeCase(server.connectionString, postmaster, monitor, mode, sessions, options.seconds, ids, lsns);
        writes.push(row);
        console.log(`${mode.padEnd(6)}  ${String(sessions).padStart(8)}  ${row.txPerSec.toFixed(0).padStart(9)}  ${row.p50Ms.toFixed(2).padStart(7)}  ${row.p99Ms.toFixed(2).padStart(7)}  ${row.walFsyncsPerTx.toFixed(2).padStart(13)}  ${row.pgCpuUsPerTx.toFixed(0).padStart(12)}  ${row.benchCpuUsPerTx.toFixed(0).padStart(15)}`);
      }
    }

    console.log('\napply: rows per record, applied by one session');
    console.log('batch  ending              rows/s   p50 ms   p99 ms');
    const applierClient = new pg.Client({ connectionString: server.connectionString });
    await applierClient.connect();
    const applier = await Applier.create(applierClient);
    const applies: ApplyRow[] = [];
    for (const batchRows of options.batches) {
      for (const ending of ['commit', 'prepare+commit', 'lww', 'lww x50'] as const) {
        const row = await applyCase(applier, batchRows, ending, options.seconds, ids, lsns, monitor);
        applies.push(row);
        console.log(`${String(batchRows).padStart(5)}  ${ending.padEnd(15)}  ${row.rowsPerSec.toFixed(0).padStart(10)}  ${row.p50Ms.toFixed(2).padStart(7)}  ${row.p99Ms.toFixed(2).padStart(7)}`);
      }
    }
    await applierClient.end();
    return { writes, applies };
  } finally {
    await monitor.end().catch(() => undefined);
    await server.destroy();
  }
}
