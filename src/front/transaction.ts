// The leader's primitives (postgres/leader.ts LeaderTransaction) over a
// transaction an SQL-front client has already run on its own session: the
// statements ran as the client sent them, under the term the front set; at
// its COMMIT, the sidecar's order of duties (sidecar/leader-write.ts) takes
// over from capture on, on the same session, exactly as for a write through
// the client library.
import { serialize } from 'pg-protocol';
import type { DatabaseError } from 'pg-protocol/dist/messages.js';
import type { LeaderTransaction, WriteOpening } from '../postgres/leader.js';
import { captured, captureValues, type Captured, type CapturedRow } from '../postgres/capture.js';
import type { Lsn } from '../core/types.js';
import type { TransactionStatus } from './wire.js';

/** What one of the front's own statements on a client's session came to. */
export interface InternalResult {
  readonly status: TransactionStatus;
  readonly rows: ReadonlyArray<ReadonlyArray<string | null>>;
  readonly error: DatabaseError | null;
}

/** The session's backend, for the front's own statements (session.ts). */
export interface InternalRunner {
  /** Send messages that end in a Sync or a simple Query; resolves at their ReadyForQuery. */
  internal(messages: Buffer): Promise<InternalResult>;
}

/** Named statements the front prepares on each session it opens (and again after a DISCARD or DEALLOCATE ALL). */
export const FRONT_STATEMENTS = {
  begin: 'qsync_front_begin',
  term: 'qsync_front_term',
  capture: 'qsync_front_capture',
  captureHeld: 'qsync_front_capture_held',
} as const;

/** A statement of the front's own that PostgreSQL refused: thrown with its SQLSTATE, as node-postgres would. */
function failed(error: DatabaseError): never {
  throw error;
}

export class FrontTransaction implements LeaderTransaction<null> {
  readonly #runner: InternalRunner;
  readonly #opening: WriteOpening;
  readonly #captureKey: string;
  /** The transaction is still open on the session (nothing prepared, committed or rolled back it). */
  #open = true;

  constructor(runner: InternalRunner, opening: WriteOpening, captureKey: string) {
    this.#runner = runner;
    this.#opening = opening;
    this.#captureKey = captureKey;
  }

  get open(): boolean {
    return this.#open;
  }

  /** The client's statements already ran, under the opening's term. */
  async run(): Promise<void> {
    // Nothing to send: the front opened the transaction and set the term before the client's statements.
  }

  async capture(stamp: { readonly lsn: Lsn; readonly time: number }, held: readonly string[] | null): Promise<Captured> {
    const values = captureValues({ captureKey: this.#captureKey, replica: this.#opening.replica, idempotencyKey: this.#opening.idempotencyKey, ...stamp }, held)
      .map((v) => (v === null ? null : String(v)));
    const r = await this.#runner.internal(Buffer.concat([
      serialize.bind({ statement: held === null ? FRONT_STATEMENTS.capture : FRONT_STATEMENTS.captureHeld, values }), serialize.execute({}), serialize.sync(),
    ]));
    if (r.error !== null) failed(r.error);
    return captured(r.rows.map(([table_name, op, rows, old_keys, mode, tx, serializable]) => ({ table_name, op, rows, old_keys, mode, tx, serializable }) as CapturedRow));
  }

  async prepare(gid: string): Promise<void> {
    await this.#end(`PREPARE TRANSACTION '${gid.replaceAll("'", "''")}'`);
  }

  async commit(journaled: boolean): Promise<void> {
    // As on the client library's path: once the journal holds the TXN, the COMMIT need not wait for its WAL flush.
    await this.#end(journaled ? 'SET LOCAL synchronous_commit = off; COMMIT' : 'COMMIT');
  }

  async rollback(): Promise<void> {
    await this.#end('ROLLBACK');
  }

  async #end(sql: string): Promise<void> {
    const r = await this.#runner.internal(serialize.query(sql));
    if (r.status === 'I') this.#open = false;
    if (r.error !== null) failed(r.error);
  }
}
