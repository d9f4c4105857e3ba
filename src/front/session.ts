// One SQL-front client and its own PostgreSQL session (session mode, as
// PgBouncer's): what the client sends is relayed as it came, what PostgreSQL
// answers is relayed back, and the front steps in at three points only.
//
//   * Before a transaction starts (the session is idle): it sets qsync.term
//     for the session when the node's term changed since, and when the
//     client's next statements may write but would run in an implicit
//     transaction (an autocommit statement, a simple query of several, an
//     extended-protocol pipeline up to its Sync), it opens an explicit one
//     first, so that the transaction is still open when they are done.
//   * A COMMIT (or END) of a transaction that is open: the front does not send
//     it. The sidecar's order of duties takes over (capture, then PREPARE and
//     the limbo, or the journal and COMMIT), and the client hears COMMIT only
//     once it is decided, or the error that says how it ended.
//   * The end of an implicit transaction the front opened: the same.
//   * Before a transaction starts in a session whose qsync.read is
//     'linearizable': a read index (sidecar/read-index.ts), so that what it
//     reads includes every write acknowledged before it was sent.
//
// The client's ReadyForQuery says what the client's own view is: a
// transaction the front opened for it is invisible to it. The front's own
// statements on the session run as units (messages up to a ReadyForQuery)
// queued behind the client's, so they leave in the same round trip.
import type { Socket } from 'node:net';
import { serialize } from 'pg-protocol';
import { QsyncError } from '../core/errors.js';
import { limits } from '../core/limits.js';
import type { Term } from '../core/types.js';
import type { Logger } from '../log.js';
import type { LeaderTransaction, WriteOpening } from '../postgres/leader.js';
import { CAPTURE_HELD_SQL, CAPTURE_SQL } from '../postgres/capture.js';
import type { Backend } from './backend.js';
import type { Inbox } from './inbox.js';
import { commitError, leadershipParameters, rewriteError, rewriteParameter } from './answers.js';
import { NamedStatements } from './named.js';
import { Units, type UnitEnd } from './units.js';
import { splitStatements, touchesData, type StatementKind } from './sql.js';
import { FRONT_STATEMENTS, FrontTransaction, type InternalResult, type InternalRunner } from './transaction.js';
import { batchedWriter, BodyReader, type BatchedWriter, commandComplete, errorResponse, parameterStatus, readFields, readyForQuery, type Message, type TransactionStatus } from './wire.js';

/** What a session asks of the node. */
export interface SessionHost {
  readonly log: Logger;
  term(): Term;
  isLeader(): boolean;
  /** The leader's SQL address, for a hint, when known. */
  leaderSql(): string | null;
  /** This node's capture key (postgres/capture.ts). */
  captureKey(): string;
  /** Resolves when a linearizable read may run on this node (read-index.ts); NOT_LEADER when it may not. */
  readIndex(): Promise<void>;
  /** Commit a transaction the client ran, through the leader's order of duties (writes.ts commitOpen). */
  commit(open: (opening: WriteOpening) => LeaderTransaction<null>, term: Term, idempotencyKey: string | null): Promise<void>;
}

const type = (c: string): number => c.charCodeAt(0);
const T = { query: type('Q'), parse: type('P'), bind: type('B'), describe: type('D'), execute: type('E'), close: type('C'), flush: type('H'), sync: type('S'),
  functionCall: type('F'), terminate: type('X'), copyData: type('d'), copyDone: type('c'), copyFail: type('f'),
  error: type('E'), notice: type('N'), complete: type('C'), parameterStatus: type('S') } as const;

export class Session implements InternalRunner {
  readonly #host: SessionHost;
  readonly #client: Socket;
  readonly #inbox: Inbox;
  readonly #backend: Backend;
  readonly #units: Units;
  /** The client opened a transaction block (BEGIN) that has not ended. */
  #clientInTx = false;
  /** The front opened the current transaction block for the client's implicit transaction. */
  #wrapped = false;
  /** The term qsync.term holds in the session (null: not set, or the client may have changed it). */
  #termSet: Term | null = null;
  /** The term the open transaction's writes ran under. */
  #txTerm: Term | null = null;
  /** The front's own named statements exist in the session. */
  #ownPrepared = false;
  /** The session's database holds the qsync schema (null: not known yet); if not, the session is only relayed. */
  #qsyncHere: boolean | null = null;
  readonly #named = new NamedStatements();
  /** The relay unit of an extended-protocol pipeline under way (up to its Sync). */
  #segment: Promise<UnitEnd> | null = null;
  /** After an error in a pipeline the front answered itself: drop the client's messages up to its Sync. */
  #discarding = false;
  /** A COMMIT is being decided: a cancel request does not reach it (PostgreSQL ignores cancels in its own sync-rep wait). */
  #committing = false;
  /** The client's SQL named qsync.idempotency_key: each COMMIT reads it (SET LOCAL qsync.idempotency_key = '...'). */
  #keyNamed = false;
  /** The session's qsync.read as the front last read it ('' when unset). */
  #read = '';
  /** The client's SQL named qsync.read since, or the connection set it: read it again before the next unit. */
  #readStale: boolean;
  /** The connection set qsync.read, so RESET ALL and DISCARD ALL return to that. */
  readonly #readAtStartup: boolean;
  /** The transaction under way has its read index: the rest of it needs none. */
  #indexed = false;
  #leaderReported: boolean;
  #clientBlocked = false;
  #backendBlocked = false;
  readonly #out: BatchedWriter;
  #closed = false;

  constructor(host: SessionHost, client: Socket, inbox: Inbox, backend: Backend, leaderReported: boolean, readAtStartup: boolean) {
    this.#host = host;
    this.#readAtStartup = readAtStartup;
    this.#readStale = readAtStartup;
    this.#client = client;
    this.#inbox = inbox;
    this.#backend = backend;
    this.#leaderReported = leaderReported;
    this.#out = batchedWriter(client);
    inbox.direct = (m) => this.#toBackend(m);
    this.#units = new Units((data) => this.#toBackend(data), () => backend.closed, (m) => this.#toClient(rewriteParameter(m, this.#host.isLeader())));
    backend.listen((m) => this.#units.take(m), (error) => this.#backendGone(error));
  }

  /** PostgreSQL's transaction status at its last ReadyForQuery. */
  get #status(): TransactionStatus {
    return this.#units.status;
  }

  get committing(): boolean {
    return this.#committing;
  }

  /** Serve the client until it leaves; resolves when both sides are closed. Never throws. */
  async serve(): Promise<void> {
    try {
      // Messages already received are taken and, where nothing needs waiting for, handled
      // without a promise each: a relayed read is a few messages each way, and a turn of
      // promises per message was a good part of the front's cost.
      for (;;) {
        const m = this.#inbox.take() ?? (await this.#inbox.next());
        if (m === null || this.#closed || m.type === T.terminate) break;
        const handled = this.#handle(m);
        if (handled !== undefined) await handled;
      }
    } catch (error) {
      const e = error as { sqlstate?: string; message?: string };
      this.#toClient(errorResponse(e.sqlstate ?? '08P01', e.message ?? String(error), { severity: 'FATAL' }));
      this.#host.log.debug({ err: e.message }, 'SQL front: a session ended on an error');
    } finally {
      this.#close();
    }
  }

  /** Handle one client message: a promise when it must wait for something, else undefined. */
  #handle(m: Message): Promise<void> | undefined {
    switch (m.type) {
      case T.query:
        return this.#simpleQuery(new BodyReader(m.body).cstring());
      case T.parse: case T.bind: case T.describe: case T.execute: case T.close: case T.flush:
        return this.#extended(m);
      case T.sync:
        return this.#sync(m);
      case T.functionCall:
        return this.#functionCall(m);
      case T.copyData: case T.copyDone: case T.copyFail:
        this.#toBackend(m);
        return undefined;
      default:
        throw Object.assign(new Error(`invalid frontend message type ${m.type}`), { sqlstate: '08P01' });
    }
  }

  async #functionCall(m: Message): Promise<void> {
    if (await this.#readRefused(true)) return this.#ready();
    await this.#prepareIdle(['write']);
    return this.#finish(await this.#relay(m.raw), true);
  }

  // ---- simple query ---------------------------------------------------------------

  async #simpleQuery(text: string): Promise<void> {
    const statements = splitStatements(text);
    // The read index first: a statement that sets qsync.read counts from the next transaction on.
    if (await this.#readRefused(statements?.some((s) => touchesData(s.kind)) ?? true)) return this.#ready();
    this.#noteKey(text);
    const commits = statements?.some((s) => s.kind === 'commit' || s.kind === 'commitChain') === true;
    if (statements === null || !commits) {
      await this.#prepareIdle(statements === null ? ['write'] : statements.map((s) => s.kind));
      return this.#finish(await this.#relay(serialize.query(text)), true);
    }
    // Several statements with a COMMIT among them: the runs between COMMITs go as they came, each
    // COMMIT is decided by the front, and an error ends the query there, as PostgreSQL would.
    let run: string[] = [];
    let kinds: StatementKind[] = [];
    const flush = async (): Promise<boolean> => {
      if (run.length === 0) return true;
      // A run after a COMMIT starts a transaction of its own.
      if (await this.#readRefused(kinds.some(touchesData))) return false;
      await this.#prepareIdle(kinds);
      const end = await this.#relay(serialize.query(run.join(';')));
      run = [];
      kinds = [];
      if (end.errored) await this.#rollbackWrap();
      return !end.errored;
    };
    for (const s of statements) {
      if (s.kind !== 'commit' && s.kind !== 'commitChain') {
        run.push(s.text);
        kinds.push(s.kind);
        continue;
      }
      if (!(await flush())) return this.#ready();
      if (!(await this.#commitStatement(s.text, s.kind === 'commitChain'))) return this.#ready();
    }
    if (!(await flush())) return this.#ready();
    return this.#finish({ status: this.#status, errored: false }, true);
  }

  /** A COMMIT statement: taken over when a transaction is open; otherwise PostgreSQL answers it. */
  async #commitStatement(text: string, chain: boolean): Promise<boolean> {
    if (this.#status !== 'T' || this.#qsyncHere !== true) return !(await this.#relay(serialize.query(text))).errored;
    if (!(await this.#takeOverCommit())) return false;
    this.#toClient(commandComplete('COMMIT'));
    if (chain) {
      // AND CHAIN: a new transaction at once; the characteristics of the one before are not carried over.
      await this.#prepareIdle(['begin']);
      await this.internal(serialize.query('BEGIN'));
      this.#clientInTx = true;
    }
    return true;
  }

  // ---- extended query -------------------------------------------------------------

  #extended(m: Message): Promise<void> | undefined {
    if (this.#discarding) return undefined;
    if (this.#segment !== null) return this.#inSegment(m);
    const kinds = this.#named.pipelineKinds(m, this.#inbox.queued);
    // The setting as it is before the pipeline, and the read index when what has arrived of it reads or writes.
    const refused = this.#readRefused(kinds.some(touchesData));
    const prepared = refused === false ? this.#prepareIdle(kinds) : undefined;
    if (refused === false && prepared === undefined) {
      this.#segment = this.#relay(null);
      return this.#inSegment(m);
    }
    return this.#openSegment(m, kinds, refused, prepared);
  }

  /** The start of a pipeline that waits: for the read index, or for the front's own statements the first time. */
  async #openSegment(m: Message, kinds: readonly StatementKind[], refused: boolean | Promise<boolean>, prepared: Promise<void> | undefined): Promise<void> {
    if (await refused) {
      // Nothing of the pipeline runs: its messages are dropped up to its Sync, which answers ReadyForQuery.
      this.#discarding = true;
      return;
    }
    await (prepared ?? this.#prepareIdle(kinds));
    this.#segment = this.#relay(null);
    return this.#inSegment(m);
  }

  /** A message of a pipeline under way. */
  #inSegment(m: Message): Promise<void> | undefined {
    const kind = this.#named.track(m, (sql) => this.#noteKey(sql));
    if (m.type === T.execute && (kind === 'commit' || kind === 'commitChain') && this.#qsyncHere === true) return this.#commitInPipeline(kind === 'commitChain');
    if (m.type === T.execute && kind !== null && touchesData(kind) && this.#read === 'linearizable' && !this.#indexed) return this.#indexInPipeline(m);
    this.#toBackend(m);
    return undefined;
  }

  /** An Execute of COMMIT inside a pipeline: end the pipeline so far, then decide the COMMIT. */
  async #commitInPipeline(chain: boolean): Promise<void> {
    this.#toBackend(serialize.sync());
    const end = await this.#closeSegment();
    if (end.errored) {
      // PostgreSQL skipped the rest up to its Sync, which the front has just sent: skip the client's rest too.
      this.#discarding = true;
      return;
    }
    if (!(await this.#commitStatement('COMMIT', chain))) this.#discarding = true;
  }

  /**
   * An Execute that reads, in a pipeline whose earlier part did not (it
   * arrived later): the read index before it. Refused, the pipeline so far is
   * ended, the client hears why, and the rest up to its Sync is dropped.
   */
  async #indexInPipeline(m: Message): Promise<void> {
    const refusal = await this.#readIndex();
    if (refusal === null) {
      this.#toBackend(m.raw);
      return;
    }
    this.#toBackend(serialize.sync());
    await this.#closeSegment();
    this.#toClient(refusal);
    this.#discarding = true;
  }

  async #sync(m: Message): Promise<void> {
    if (this.#discarding) {
      this.#discarding = false;
      await this.#rollbackWrap();
      return this.#ready();
    }
    if (this.#segment === null) return this.#finish({ status: this.#status, errored: false }, true);
    // The client's own Sync goes on with the messages before it, unless it came with a body PostgreSQL would refuse.
    if (m.end - m.start === 5) this.#toBackend(m);
    else this.#toBackend(serialize.sync());
    return this.#finish(await this.#closeSegment(), true);
  }

  async #closeSegment(): Promise<UnitEnd> {
    const end = await (this.#segment as Promise<UnitEnd>);
    this.#segment = null;
    return end;
  }

  // ---- transactions -----------------------------------------------------------------

  /**
   * Before statements run on an idle session: the term, the front's named
   * statements, and an explicit transaction when they may write but would
   * run in an implicit one. Queued ahead of them, not waited for: a promise
   * only the first time, which waits to learn whether the database holds
   * the qsync schema.
   */
  #prepareIdle(kinds: readonly StatementKind[]): Promise<void> | undefined {
    if (this.#status !== 'I' || this.#units.pending > 0) return undefined;
    if (!this.#ownPrepared) {
      this.#ownPrepared = true;
      const own = serialize.parse({ name: FRONT_STATEMENTS.begin, text: 'BEGIN' });
      const term = serialize.parse({ name: FRONT_STATEMENTS.term, text: "SELECT set_config('qsync.term', $1, false)" });
      const capture = this.internal(Buffer.concat([own, term, serialize.sync(), serialize.parse({ name: FRONT_STATEMENTS.capture, text: CAPTURE_SQL }),
        serialize.parse({ name: FRONT_STATEMENTS.captureHeld, text: CAPTURE_HELD_SQL }), serialize.sync()]), 2);
      // The first time, wait: a database without the qsync schema (not the one qsync replicates)
      // has no replicated table, and its sessions are only relayed.
      if (this.#qsyncHere === null) {
        return capture.then((r) => {
          this.#qsyncHere = r.error === null;
          this.#queueIdle(kinds);
        });
      }
    }
    this.#queueIdle(kinds);
    return undefined;
  }

  /** The term and the explicit transaction of prepareIdle, queued as the front's own units. */
  #queueIdle(kinds: readonly StatementKind[]): void {
    if (this.#qsyncHere === false) return;
    const units: Buffer[] = [];
    const term = this.#host.term();
    if (this.#termSet !== term) {
      units.push(serialize.bind({ statement: FRONT_STATEMENTS.term, values: [String(term)] }), serialize.execute({}), serialize.sync());
      this.#termSet = term;
    }
    this.#txTerm = term;
    const wrap = kinds.includes('write') && !kinds.includes('outside') && kinds[0] !== 'begin';
    if (wrap) {
      units.push(serialize.bind({ statement: FRONT_STATEMENTS.begin }), serialize.execute({}), serialize.sync());
      this.#wrapped = true;
    }
    if (units.length === 0) return;
    // Their answers are the front's own. They cannot fail on a healthy session; if one does, the
    // client's statements run as they would have, and a write to a replicated table is refused at its
    // commit (QS005): nothing commits unreplicated.
    void this.internal(Buffer.concat(units), units.filter((u) => u[0] === T.sync).length);
  }

  /** The end of what the client sent up to a ReadyForQuery: an implicit transaction the front opened is decided now. */
  async #finish(end: UnitEnd, ready: boolean): Promise<void> {
    if (this.#wrapped && !this.#clientInTx) {
      if (end.status === 'T' && !end.errored) await this.#takeOverCommit();
      else await this.#rollbackWrap();
    }
    if (ready) this.#ready();
  }

  /** A transaction the front opened for the client ends with the client's error: roll it back. */
  async #rollbackWrap(): Promise<void> {
    if (!this.#wrapped || this.#clientInTx) return;
    this.#wrapped = false;
    if (this.#status !== 'I') await this.internal(serialize.query('ROLLBACK'));
  }

  /** What the client's SQL says about the settings the front follows: qsync.idempotency_key and qsync.read. */
  #noteKey(sql: string): void {
    if (!/qsync\./i.test(sql)) return;
    if (!this.#keyNamed && /qsync\.idempotency_key/i.test(sql)) this.#keyNamed = true;
    if (/qsync\.read/i.test(sql)) this.#readStale = true;
  }

  /**
   * Before the client's next unit: learn qsync.read if the client's SQL may
   * have changed it, and with 'linearizable', when the unit reads or writes
   * tables (`touches`) and its transaction has no read index yet, wait for
   * one. True when the client was answered with an error instead (this node
   * does not lead, no quorum confirmed it in time, or the setting is not one
   * qsync knows); the unit is then not run. A promise only when it must
   * read the setting or wait for the index.
   */
  #readRefused(touches: boolean): boolean | Promise<boolean> {
    // No transaction open: the unit starts a new one.
    if (this.#status === 'I') this.#indexed = false;
    if (!(this.#readStale && this.#status === 'I') && (this.#read === '' || this.#read === 'local')) return false;
    return this.#readRefusedAsync(touches);
  }

  async #readRefusedAsync(touches: boolean): Promise<boolean> {
    // Read only between transactions: a SELECT inside one would take its snapshot before the index.
    if (this.#readStale && this.#status === 'I') {
      const r = await this.internal(serialize.query("SELECT coalesce(current_setting('qsync.read', true), '')"));
      if (r.error === null) {
        this.#read = r.rows[0]?.[0] ?? '';
        this.#readStale = false;
      }
    }
    if (this.#read !== '' && this.#read !== 'local' && this.#read !== 'linearizable') {
      // Read again each time until the client sets a value qsync knows; a setting alone still runs, to fix it.
      this.#readStale = true;
      if (!touches) return false;
      this.#toClient(errorResponse('22023', `qsync: qsync.read is ${JSON.stringify(this.#read.slice(0, 64))}; it must be local or linearizable`, {
        hint: "SET qsync.read = 'linearizable' (or 'local', the default) for the session.",
      }));
      return true;
    }
    if (!touches || this.#read !== 'linearizable' || this.#indexed) return false;
    const refusal = await this.#readIndex();
    if (refusal === null) return false;
    this.#toClient(refusal);
    return true;
  }

  /** The read index for the transaction under way; the error to answer with when there is none. */
  async #readIndex(): Promise<Buffer | null> {
    try {
      await this.#host.readIndex();
      this.#indexed = true;
      return null;
    } catch (error) {
      const leader = this.#host.leaderSql();
      return errorResponse('55000', `qsync: ${(error as Error).message}`, {
        hint: leader === null ? 'Linearizable reads run on the leader; connect to it (libpq: target_session_attrs=read-write).'
          : `Linearizable reads run on the leader, whose SQL port is ${leader} (libpq: list every node and set target_session_attrs=read-write).`,
      });
    }
  }

  /** The transaction's idempotency key, when the client's SQL may have set one. */
  async #idempotencyKey(): Promise<string | null> {
    if (!this.#keyNamed) return null;
    const r = await this.internal(serialize.query("SELECT nullif(current_setting('qsync.idempotency_key', true), '')"));
    const key = r.rows[0]?.[0] ?? null;
    if (key !== null && Buffer.byteLength(key) > limits.idempotencyKeyBytesMax) {
      throw new QsyncError('BAD_REQUEST', `qsync.idempotency_key is longer than ${limits.idempotencyKeyBytesMax} bytes`, { sqlstate: '22023' });
    }
    return key;
  }

  /**
   * Decide the open transaction through the leader's order of duties. Its
   * outcome's error goes to the client; whatever happened, the session is
   * left with no transaction open.
   */
  async #takeOverCommit(): Promise<boolean> {
    this.#committing = true;
    let tx: FrontTransaction | null = null;
    try {
      const key = await this.#idempotencyKey();
      await this.#host.commit((opening) => (tx = new FrontTransaction(this, opening, this.#host.captureKey())), this.#txTerm ?? this.#host.term(), key);
      return true;
    } catch (error) {
      this.#toClient(commitError(error, () => this.#host.leaderSql()));
      return false;
    } finally {
      this.#committing = false;
      this.#wrapped = false;
      this.#clientInTx = false;
      if ((tx === null || (tx as FrontTransaction).open) && this.#status !== 'I' && !this.#backend.closed) await this.internal(serialize.query('ROLLBACK'));
    }
  }

  /** The client's view of the transaction: one the front opened for it does not show. */
  #ready(): void {
    const leader = this.#host.isLeader();
    if (leader !== this.#leaderReported) {
      // Leadership changed: said before ReadyForQuery, where PostgreSQL reports its own changes.
      this.#leaderReported = leader;
      for (const [name, value] of leadershipParameters(leader)) this.#toClient(parameterStatus(name, value));
    }
    this.#toClient(readyForQuery(this.#clientInTx ? this.#status : 'I'));
  }

  // ---- units and what PostgreSQL answers --------------------------------------------

  /** The front's own statements on the session (transaction.ts runs its primitives through this). */
  internal(messages: Buffer, units = 1): Promise<InternalResult> {
    return this.#units.internal(messages, units);
  }

  /** Relay what PostgreSQL answers to `messages` (or to the pipeline the client sends next) up to its ReadyForQuery. */
  #relay(messages: Buffer | null): Promise<UnitEnd> {
    const wrapped = this.#wrapped;
    return this.#units.relay(messages, (m) => {
      if (m.type === T.error) return this.#toClient(rewriteError(m, this.#host.leaderSql()));
      // The front's BEGIN came first: the client's own BEGIN is no warning to it.
      if (m.type === T.notice && wrapped && readFields(m.body).get('C') === '25001') return;
      if (m.type === T.complete) this.#observeTag(m);
      if (m.type === T.parameterStatus) return this.#toClient(rewriteParameter(m, this.#host.isLeader()));
      this.#toClient(m);
    });
  }

  /** What a command's tag says about the transaction and the session. */
  #observeTag(m: Message): void {
    const tag = m.tag();
    if (tag === 'BEGIN' || tag === 'START TRANSACTION') {
      // The client's own block from here on, even where the front had opened one for it.
      this.#clientInTx = true;
      this.#wrapped = false;
    } else if (tag === 'COMMIT' || tag === 'ROLLBACK' || tag === 'PREPARE TRANSACTION') {
      this.#clientInTx = false;
      this.#wrapped = false;
    } else if (tag === 'SET' || tag === 'RESET' || tag.startsWith('DISCARD') || tag === 'DEALLOCATE ALL') {
      this.#termSet = null;
      // RESET ALL and DISCARD ALL return qsync.read to what the connection set.
      if (tag !== 'SET' && (this.#read !== '' || this.#readAtStartup)) this.#readStale = true;
      if (tag !== 'SET' && tag !== 'RESET') this.#ownPrepared = false;
    }
  }

  // ---- sockets ----------------------------------------------------------------------

  /** Bytes the front wrote, or a message PostgreSQL sent, relayed as it came (wire.ts BatchedWriter). */
  #toClient(data: Buffer | Message): void {
    if (this.#client.destroyed) return;
    // The client's socket buffer is full: PostgreSQL's is not read until it drains.
    if (!this.#out.write(data) && !this.#clientBlocked) {
      this.#clientBlocked = true;
      this.#backend.pause();
      this.#client.once('drain', () => {
        this.#clientBlocked = false;
        this.#backend.resume();
      });
    }
  }

  /** Bytes the front wrote, or a message the client sent, relayed as it came. */
  #toBackend(data: Buffer | Message): void {
    if (this.#backend.closed) return;
    // PostgreSQL's socket buffer is full: the client's is not read until it drains.
    if (!this.#backend.write(data) && !this.#backendBlocked) {
      this.#backendBlocked = true;
      this.#client.pause();
      this.#backend.onDrain(() => {
        this.#backendBlocked = false;
        this.#client.resume();
      });
    }
  }

  #backendGone(error: Error | null): void {
    if (this.#closed) return;
    this.#toClient(errorResponse('57P01', `qsync: the PostgreSQL session ended${error === null ? '' : `: ${error.message}`}`, { severity: 'FATAL' }));
    this.#units.lost();
    this.#close();
  }

  #close(): void {
    if (this.#closed) return;
    this.#closed = true;
    // A commit being decided goes on: its outcome does not depend on the client.
    this.#backend.close();
    this.#out.flush();
    this.#client.end();
  }
}
