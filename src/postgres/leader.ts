// One client transaction on the leader's PostgreSQL, as the primitives the
// sidecar's order of duties calls (sidecar/leader-write.ts runs them top to
// bottom, in production and in the simulator alike):
//
//   run       BEGIN; SET LOCAL qsync.term; <statements>   (one round trip on a pipelining client)
//   capture   row images, applied lsn, idempotency key (capture.ts)
//   prepare   PREPARE TRANSACTION gid
//   commit    COMMIT, without waiting for its WAL flush once the journal holds the TXN
//   rollback  ROLLBACK
import type pg from 'pg';
import { assert } from '../core/assert.js';
import type { Change } from '../core/record.js';
import type { Lsn, ReplicaId, Term } from '../core/types.js';
import { capture, type Captured } from './capture.js';
import { pipelines } from './pipeline.js';

/** A write's identity in PostgreSQL: the term the fence checks it under, and what capture records. */
export interface WriteOpening {
  readonly term: Term;
  readonly replica: ReplicaId;
  readonly idempotencyKey: string | null;
}

/**
 * One client transaction on the leader's PostgreSQL. The simulator's
 * PostgreSQL implements the same primitives; the order is not theirs.
 */
export interface LeaderTransaction<W> {
  /** BEGIN under the opening's term (the fence checks it) and run the work's statements. */
  run(work: W): Promise<void>;
  /**
   * Take the transaction's changes, stamped with its TXN's lsn and hybrid
   * time. `held`: the ids of the transactions the leader holds open (RFC
   * 0027); capture refuses (SQLSTATE QS006) if one of them has ended, and says
   * this transaction's id. Null: a write that will be prepared, unchecked.
   */
  capture(stamp: { readonly lsn: Lsn; readonly time: number }, held: readonly string[] | null): Promise<Captured>;
  prepare(gid: string): Promise<void>;
  /** COMMIT. `journaled`: the journal holds the TXN durably, so the COMMIT need not wait for its WAL flush. */
  commit(journaled: boolean): Promise<void>;
  rollback(): Promise<void>;
}

export type LeaderOutcome =
  | { readonly kind: 'prepared'; readonly lsn: Lsn; readonly gid: string; readonly changes: Change[] }
  /** Held open through the quorum wait, then committed or rolled back as the limbo decided (or lost with its session). */
  | { readonly kind: 'held'; readonly lsn: Lsn; readonly gid: string; readonly changes: Change[] }
  | { readonly kind: 'committed'; readonly lsn: Lsn; readonly gid: string; readonly changes: Change[] }
  /** Nothing replicated was written: committed locally; the reserved lsn carries no changes. */
  | { readonly kind: 'empty'; readonly lsn: Lsn; readonly gid: string };

/** A write's work in PostgreSQL: its statements, run on the transaction's connection. */
export type PgWork = (client: pg.ClientBase) => Promise<void>;

/** The primitives on one connection (checked out by the caller, who releases it). */
export class PgLeaderTransaction implements LeaderTransaction<PgWork> {
  readonly #client: pg.ClientBase;
  readonly #opening: WriteOpening;
  /** This node's capture key (capture.ts): without it the changes cannot be taken, nor committed. */
  readonly #captureKey: string;

  constructor(client: pg.ClientBase, opening: WriteOpening, captureKey: string) {
    assert(Number.isSafeInteger(opening.term) && opening.term >= 0, `term ${opening.term} is not a non-negative integer`);
    this.#client = client;
    this.#opening = opening;
    this.#captureKey = captureKey;
  }

  async run(work: PgWork): Promise<void> {
    const client = this.#client;
    // The term is an integer, safe to inline. On a pipelining client the BEGIN leaves with the
    // work's statements (pipeline.ts): one round trip for both. A BEGIN fails only on a broken
    // connection or an aborted transaction, and either fails every statement behind it too.
    const begun = client.query(`BEGIN; SET LOCAL qsync.term = '${this.#opening.term}'`);
    if (pipelines(client)) begun.catch(() => undefined);
    else await begun;
    const failed = await work(client).then(() => null, (error: unknown) => ({ error }));
    await begun;
    if (failed !== null) throw failed.error;
  }

  capture(stamp: { readonly lsn: Lsn; readonly time: number }, held: readonly string[] | null): Promise<Captured> {
    return capture(this.#client, { captureKey: this.#captureKey, replica: this.#opening.replica, idempotencyKey: this.#opening.idempotencyKey, ...stamp }, held);
  }

  async prepare(gid: string): Promise<void> {
    await this.#client.query(`PREPARE TRANSACTION ${this.#client.escapeLiteral(gid)}`);
  }

  async commit(journaled: boolean): Promise<void> {
    // A crash of PostgreSQL that loses a journaled COMMIT is repaired from the journal (the driver's replay, RFC 0013).
    await this.#client.query(journaled ? 'SET LOCAL synchronous_commit = off; COMMIT' : 'COMMIT');
  }

  async rollback(): Promise<void> {
    await this.#client.query('ROLLBACK');
  }
}
