// The leader's PostgreSQL write path (DESIGN.md §8), without the journal:
//
//   BEGIN; SET LOCAL qsync.term; <statements>; capture; record idempotency key
//   and applied lsn; then PREPARE TRANSACTION gid (sync: the limbo) or COMMIT.
//
// The caller (the sidecar) journals the TXN after PREPARE, waits for the
// quorum, then COMMIT PREPAREs or ROLLBACK PREPAREs it.
import type pg from 'pg';
import type { Change } from '../core/record.js';
import type { Lsn, ReplicaId, Term } from '../core/types.js';
import { markApplied } from './apply.js';
import { capture } from './capture.js';

export interface LeaderWrite {
  readonly term: Term;
  readonly replica: ReplicaId;
  /** The lsn this transaction's TXN record will have. */
  readonly lsn: Lsn;
  /** Hybrid time of the write. */
  readonly time: number;
  readonly gid: string;
  readonly idempotencyKey: string | null;
}

export type LeaderOutcome =
  | { readonly kind: 'prepared'; readonly changes: Change[] }
  | { readonly kind: 'committed'; readonly changes: Change[] }
  /** Nothing replicated was written: committed locally, no record needed. */
  | { readonly kind: 'empty' };

export async function runLeaderWrite(client: pg.ClientBase, write: LeaderWrite, body: (client: pg.ClientBase) => Promise<void>): Promise<LeaderOutcome> {
  await client.query('BEGIN');
  try {
    await client.query(`SELECT set_config('qsync.term', $1, true)`, [String(write.term)]);
    await body(client);
    const { changes, sync } = await capture(client, { time: write.time, replica: write.replica });
    if (changes.length === 0) {
      await client.query('COMMIT');
      return { kind: 'empty' };
    }
    if (write.idempotencyKey !== null) {
      await client.query('INSERT INTO qsync.idempotency (key, replica_id, lsn) VALUES ($1, $2, $3)', [write.idempotencyKey, write.replica, write.lsn]);
    }
    await markApplied(client, write.replica, write.lsn);
    if (sync) {
      await client.query(`PREPARE TRANSACTION ${client.escapeLiteral(write.gid)}`);
      return { kind: 'prepared', changes };
    }
    await client.query('COMMIT');
    return { kind: 'committed', changes };
  } catch (error) {
    await client.query('ROLLBACK');
    throw error;
  }
}
