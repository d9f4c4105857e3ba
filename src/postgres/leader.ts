// The PostgreSQL side of a write through qsync (DESIGN.md §8):
//
//   BEGIN; SET LOCAL qsync.term; <statements>   (one round trip on a pipelining client)
//   reserve the TXN's lsn (as late as possible: lsns are journaled in order)
//   capture (row images, applied lsn, idempotency key)
//   sync table touched:  PREPARE TRANSACTION gid, then journal the TXN
//   async tables only:   journal the TXN, then COMMIT (without waiting for its WAL flush)
//
// Journaling an async TXN before its COMMIT means a crash can never leave a
// committed write the journal does not know (and so never replicates): if the
// sidecar dies between the two, replay applies the journaled TXN at restart;
// if the COMMIT fails (PostgreSQL died), the driver applies it from the TXN
// once PostgreSQL is back (RFC 0007).
// A sync TXN is journaled after PREPARE, so the limbo entry exists in
// PostgreSQL before any peer hears of it; the caller then waits for the
// quorum and COMMIT PREPAREs or ROLLBACK PREPAREs it.
import type pg from 'pg';
import { assert } from '../core/assert.js';
import type { Change } from '../core/record.js';
import type { Lsn, ReplicaId, Term } from '../core/types.js';
import { capture } from './capture.js';
import { pipelines } from './pipeline.js';

export interface LeaderWrite {
  readonly term: Term;
  /** This node's capture key (capture.ts): without it the changes cannot be taken, nor committed. */
  readonly captureKey: string;
  readonly replica: ReplicaId;
  readonly idempotencyKey: string | null;
  /**
   * The lsn, gid and hybrid time this transaction's TXN record will have,
   * called right before capture. The time is read then, not at BEGIN: by then
   * the node's clock has passed every record it applied, so the write's
   * versions are newer than any it overwrites (last-writer-wins on async tables).
   */
  readonly reserve: () => { readonly lsn: Lsn; readonly gid: string; readonly time: number };
  /** Journal the TXN; resolves when durable. Without it, nothing is journaled (tests, benchmarks). */
  readonly journal?: (txn: { lsn: Lsn; gid: string; time: number; sync: boolean; changes: Change[] }) => Promise<void>;
}

export type LeaderOutcome =
  | { readonly kind: 'prepared'; readonly lsn: Lsn; readonly gid: string; readonly changes: Change[] }
  | { readonly kind: 'committed'; readonly lsn: Lsn; readonly gid: string; readonly changes: Change[] }
  /** Nothing replicated was written: committed locally; the reserved lsn carries no changes. */
  | { readonly kind: 'empty'; readonly lsn: Lsn; readonly gid: string };

export async function runLeaderWrite(client: pg.ClientBase, write: LeaderWrite, body: (client: pg.ClientBase) => Promise<void>): Promise<LeaderOutcome> {
  assert(Number.isSafeInteger(write.term) && write.term >= 0, `term ${write.term} is not a non-negative integer`);
  // The term is an integer, safe to inline. On a pipelining client the BEGIN leaves with the
  // body's statements (pipeline.ts): one round trip for both. A BEGIN fails only on a broken
  // connection or an aborted transaction, and either fails every statement behind it too.
  const begun = client.query(`BEGIN; SET LOCAL qsync.term = '${write.term}'`);
  if (pipelines(client)) begun.catch(() => undefined);
  else await begun;
  let open = true;
  try {
    const failed = await body(client).then(() => null, (error: unknown) => ({ error }));
    await begun;
    if (failed !== null) throw failed.error;
    const { lsn, gid, time } = write.reserve();
    const { changes, sync } = await capture(client, { captureKey: write.captureKey, time, replica: write.replica, lsn, idempotencyKey: write.idempotencyKey });
    if (changes.length === 0) {
      await client.query('COMMIT');
      open = false;
      return { kind: 'empty', lsn, gid };
    }
    if (sync) {
      await client.query(`PREPARE TRANSACTION ${client.escapeLiteral(gid)}`);
      open = false;
      await write.journal?.({ lsn, gid, time, sync, changes });
      return { kind: 'prepared', lsn, gid, changes };
    }
    await write.journal?.({ lsn, gid, time, sync, changes });
    // The journal holds the TXN durably: the COMMIT need not wait for its own WAL flush. A crash
    // of PostgreSQL that loses it is repaired from the journal (the driver's replay, RFC 0013).
    await client.query('SET LOCAL synchronous_commit = off; COMMIT');
    open = false;
    return { kind: 'committed', lsn, gid, changes };
  } catch (error) {
    if (open) await client.query('ROLLBACK');
    throw error;
  }
}
