// Journal benchmark: group-commit throughput and append latency.
//
// For each record size (200 B and 2 KB, encoded) and each number of
// concurrent callers (1, 16, 256), callers append in a loop for a fixed time;
// every append awaits its own durability (one fdatasync per batch). Prints
// records/s, MB/s, fsyncs/s, records per fsync and p50/p99 append latency,
// after a line measuring this disk's raw write+fdatasync latency.
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeRecord, type TxnRecord } from '../src/core/record.js';
import type { Lsn, ReplicaId, Term } from '../src/core/types.js';
import { Journal } from '../src/journal/index.js';
import { closedLoop, latency } from './stats.js';

export interface JournalBenchOptions {
  readonly seconds: number;
  readonly sizes: readonly number[];
  readonly callers: readonly number[];
  readonly dir?: string;
}

export interface JournalBenchRow {
  readonly recordBytes: number;
  readonly callers: number;
  readonly records: number;
  readonly seconds: number;
  readonly recordsPerSec: number;
  readonly mbPerSec: number;
  readonly fsyncsPerSec: number;
  readonly recordsPerFsync: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
}

function makeRecord(payload: string, replica: number, lsn: number): TxnRecord {
  return {
    kind: 'txn', replica: replica as ReplicaId, lsn: lsn as Lsn, term: 1 as Term, time: 1_700_000_000_000 + lsn,
    gid: `qsync:bench:${replica}:${lsn}`, sync: true, idempotencyKey: null,
    changes: [{ table: 'public.bench', op: 'insert', rows: JSON.stringify([{ id: lsn, payload }]) }],
  };
}

/** The payload that makes a TXN's encoded body about `bytes` long (lsns of similar size). */
function payloadFor(bytes: number): string {
  let pad = Math.max(0, bytes - encodeRecord(makeRecord('', 1, 100_000)).length);
  while (pad > 0 && encodeRecord(makeRecord('x'.repeat(pad), 1, 100_000)).length > bytes) pad -= 1;
  return 'x'.repeat(pad);
}

async function rawFsyncMs(dir: string, count = 200): Promise<{ p50Ms: number; p99Ms: number }> {
  const lat = latency();
  const handle = await open(join(dir, 'fsync-probe'), 'w');
  const block = Buffer.alloc(4096, 7);
  try {
    for (let i = 0; i < count; i += 1) {
      const start = performance.now();
      await handle.write(block, 0, block.length, i * block.length);
      await handle.datasync();
      lat.record(start);
    }
  } finally {
    await handle.close();
  }
  return { p50Ms: lat.p50Ms(), p99Ms: lat.p99Ms() };
}

async function runCase(dir: string, recordBytes: number, callers: number, seconds: number): Promise<JournalBenchRow> {
  const journal = await Journal.open({ dir });
  const replicas = 3;
  const payload = payloadFor(recordBytes);
  const before = journal.stats();
  const run = await closedLoop(callers, seconds, async (id, i) => {
    const replica = 1 + ((id + i) % replicas);
    await journal.append(makeRecord(payload, replica, (journal.tailVclock[replica] ?? 0) + 1));
  });
  const elapsed = run.seconds;
  const stats = journal.stats();
  await journal.close();
  const records = stats.appends - before.appends;
  const fsyncs = stats.fsyncs - before.fsyncs;
  return {
    recordBytes, callers, records, seconds: elapsed,
    recordsPerSec: records / elapsed,
    mbPerSec: (stats.bytesWritten - before.bytesWritten) / elapsed / 1e6,
    fsyncsPerSec: fsyncs / elapsed,
    recordsPerFsync: records / Math.max(1, fsyncs),
    p50Ms: run.latency.p50Ms(),
    p99Ms: run.latency.p99Ms(),
  };
}

export async function runJournalBench(options: JournalBenchOptions): Promise<{ fsync: { p50Ms: number; p99Ms: number }; rows: JournalBenchRow[] }> {
  const root = await mkdtemp(join(options.dir ?? tmpdir(), 'qsync-bench-journal-'));
  try {
    const fsync = await rawFsyncMs(root);
    console.log(`disk: 4 KiB write + fdatasync p50 ${fsync.p50Ms.toFixed(3)} ms, p99 ${fsync.p99Ms.toFixed(3)} ms (${root})`);
    console.log('record  callers   records/s     MB/s  fsyncs/s  rec/fsync   p50 ms   p99 ms');
    const rows: JournalBenchRow[] = [];
    for (const size of options.sizes) {
      for (const callers of options.callers) {
        const row = await runCase(join(root, `${size}-${callers}`), size, callers, options.seconds);
        rows.push(row);
        console.log(
          `${String(size).padStart(6)}  ${String(callers).padStart(7)}  ${row.recordsPerSec.toFixed(0).padStart(10)}  ${row.mbPerSec.toFixed(1).padStart(7)}  ${row.fsyncsPerSec.toFixed(0).padStart(8)}  ${row.recordsPerFsync.toFixed(1).padStart(9)}  ${row.p50Ms.toFixed(3).padStart(7)}  ${row.p99Ms.toFixed(3).padStart(7)}`,
        );
      }
    }
    return { fsync, rows };
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}
