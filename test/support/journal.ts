// Helpers for journal tests: temp dirs and record factories.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JournalRecord, RaftRecord, TxnRecord } from '../../src/core/record.js';
import type { Lsn, ReplicaId, Term } from '../../src/core/types.js';
import type { Journal } from '../../src/journal/index.js';

export async function tempDir(prefix = 'qsync-test-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export function txn(replica: number, lsn: number, payloadBytes = 16): TxnRecord {
  return {
    kind: 'txn', replica: replica as ReplicaId, lsn: lsn as Lsn, term: 1 as Term, time: 1_000 + lsn,
    gid: `qsync:test:${replica}:${lsn}`, sync: lsn % 2 === 0, idempotencyKey: null,
    changes: [{ table: 'public.t', op: 'insert', rows: JSON.stringify([{ id: lsn, v: 'x'.repeat(payloadBytes) }]) }],
  };
}

export function raft(lsn: number, term: number, vote: number): RaftRecord {
  return { kind: 'raft', replica: 0 as ReplicaId, lsn: lsn as Lsn, term: term as Term, time: 0, vote: vote as ReplicaId };
}

/** The next record of `replica` for this journal (lsn = tail + 1). */
export function nextTxn(journal: Journal, replica: number, payloadBytes = 16): TxnRecord {
  return txn(replica, (journal.tailVclock[replica] ?? 0) + 1, payloadBytes);
}

export async function readAll(journal: Journal, includeLocal = true): Promise<JournalRecord[]> {
  const records: JournalRecord[] = [];
  for await (const record of journal.cursor([], { includeLocal })) records.push(record);
  return records;
}

export const key = (r: JournalRecord): string => `${r.replica}:${r.lsn}`;
