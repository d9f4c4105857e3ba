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
import { assert } from '../core/assert.js';
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
  assert(Number.isSafeInteger(write.term) && write.term >= 0, `term ${write.term} is not a non-negative integer`);
  // One round trip: the term is an integer, safe to inline.
  await client.query(`BEGIN; SET LOCAL qsync.term = '${write.term}'`);
  try {
    await body(client);
    const { changes, sync } = await capture(client, write);
    if (changes.length === 0) {
      await client.query('COMMIT');
      return { kind: 'empty' };
    }
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
