// The leader's write path (issue 20, deliver 6: the driver split by duty):
// a client transaction through the order of duties (leader-write.ts), its
// wait for the limbo, a journaled async write whose COMMIT failed, and the
// two operator writes that reserve own lsns inside a PostgreSQL transaction
// (a table's mode, a schema change). The driver passes what it owns through
// WritesHost; this module owns the counts below and nothing else.
import { assert } from '../core/assert.js';
import { QsyncError } from '../core/errors.js';
import { limits } from '../core/limits.js';
import type { TableMode, TxnRecord } from '../core/record.js';
import type { Lsn, ReplicaId, Term } from '../core/types.js';
import type { Logger } from '../log.js';
import type { LeaderOutcome, LeaderTransaction, WriteOpening } from '../postgres/index.js';
import type { Clock, Database, NodeEvent, PlantedBugs } from './io.js';
import { heldEnded } from '../postgres/capture.js';
import type { HeldDuty } from './context.js';
import { leaderWrite, type WriteSteps } from './leader-write.js';
import type { OwnLog } from './own-log.js';

/** What the write path reads and asks of the rest of the node (the driver). */
export interface WritesHost {
  readonly log: Logger;
  readonly self: ReplicaId;
  term(): Term;
  isLeader(): boolean;
  /** PostgreSQL agrees with the journal: writes may begin. */
  recovered(): boolean;
  /** Entries the limbo holds now. */
  limboEntries(): number;
  /** Resolves once a leadership change under way has settled. */
  settled(): Promise<void>;
  notLeader(code: 'NOT_LEADER' | 'STALE_TERM', message: string): QsyncError;
  leaderName(): string;
  /** The node's hybrid clock (strictly increasing, never behind anything seen). */
  now(): number;
  emit(event: NodeEvent): void;
  /** Resolves when the limbo confirms `gid`; rejects with the client's error when it does not. */
  waitFor(gid: string): Promise<void>;
  /** Own records became durable: the links may send them. */
  ownDurable(): void;
  /** Run `work` in the apply queue's order, retried until done (a transient failure is retried, not thrown). */
  inQueue<T>(what: string, work: () => Promise<T>, context: Record<string, unknown>): Promise<T>;
  /** A write failed after its PREPARE was sent and before its TXN was journaled: roll `gid` back if PostgreSQL holds it. */
  orphaned(gid: string): void;
  /** Sync writes held open (RFC 0027); null when this node prepares them. */
  readonly held: HeldDuty | null;
}

/** Run the order of duties (leader-write.ts) on a transaction opened under `opening`. */
type WriteOrder = (opening: WriteOpening, steps: WriteSteps) => Promise<LeaderOutcome>;

export class Writes<S, W> {
  readonly #host: WritesHost;
  readonly #db: Database<S, W>;
  readonly #own: OwnLog;
  readonly #clock: Clock;
  readonly #bugs: PlantedBugs;
  /** Writes past their checks and not yet journaled: the limbo's bound counts them (written here only). */
  #beforeLimbo = 0;
  /** This node's async writes journaled and not yet committed here (written here only). */
  readonly #ownInFlight = new Set<Lsn>();

  constructor(host: WritesHost, db: Database<S, W>, own: OwnLog, clock: Clock, bugs: PlantedBugs) {
    this.#host = host;
    this.#db = db;
    this.#own = own;
    this.#clock = clock;
    this.#bugs = bugs;
  }

  /** Writes not yet in the limbo: a transfer and a snapshot load wait for none. */
  get beforeLimbo(): number {
    return this.#beforeLimbo;
  }

  /** Own async writes journaled but not yet committed here: retention keeps their records, a snapshot load waits for none. */
  get ownInFlight(): ReadonlySet<Lsn> {
    return this.#ownInFlight;
  }

  /**
   * The write path: run `work` in a qsync transaction on the session, journal
   * it in lsn order, and for a sync transaction wait until the limbo decides it.
   */
  write(session: S, idempotencyKey: string | null, term: Term | null, work: W): Promise<void> {
    return this.#counted(idempotencyKey, term, false, (opening, steps) => this.#db.write(session, opening, (tx) => leaderWrite(tx, steps, work, this.#bugs)));
  }

  /**
   * The same path for a transaction a client has already run on a session of
   * its own (the SQL front, front/session.ts): its statements ran under
   * `term`, which the fence checked; from capture on, the order is the same.
   * Its TXN must carry that term: if the node's term has moved on since (an
   * election came between, and its apply may wait behind this transaction's
   * locks), the transaction is stale and rolled back.
   */
  commitOpen<X>(open: (opening: WriteOpening) => LeaderTransaction<X>, work: X, idempotencyKey: string | null, term: Term): Promise<void> {
    return this.#counted(idempotencyKey, term, true, (opening, steps) => leaderWrite(open(opening), steps, work, this.#bugs));
  }

  async #counted(idempotencyKey: string | null, term: Term | null, ranUnderTerm: boolean, order: WriteOrder): Promise<void> {
    const written = { mode: 'none' as 'sync' | 'async' | 'local' | 'none', limboSince: null as number | null };
    try {
      await this.#write(idempotencyKey, term, ranUnderTerm, order, written);
      this.#host.emit({ kind: 'commit', mode: written.mode, outcome: 'committed', limboMs: written.limboSince === null ? null : this.#clock.nowMs() - written.limboSince });
    } catch (error) {
      const code = error instanceof QsyncError ? error.code : null;
      const outcome = code === 'ROLLED_BACK' ? 'rolledBack' : code === 'OUTCOME_UNKNOWN' ? 'unknown' : 'failed';
      this.#host.emit({ kind: 'commit', mode: written.mode, outcome, limboMs: null });
      throw error;
    }
  }

  async #write(idempotencyKey: string | null, term: Term | null, ranUnderTerm: boolean, order: WriteOrder, written: { mode: 'sync' | 'async' | 'local' | 'none'; limboSince: number | null }): Promise<void> {
    if (term !== null && term < this.#host.term()) {
      this.#host.emit({ kind: 'staleTerm', term: this.#host.term(), given: term });
      throw this.#host.notLeader('STALE_TERM', `stale term ${term} (current ${this.#host.term()})`);
    }
    if (!this.#host.recovered()) throw this.#host.notLeader('NOT_LEADER', `node ${this.#host.self} is starting: it takes writes once PostgreSQL agrees with its journal`);
    await this.#host.settled();
    // A held write whose session ended is applied from the journal first (RFC 0027): what would run now might take its rows.
    const held = this.#host.held;
    if (held !== null && held.lost > 0 && this.#bugs.lostForgotten !== true) await held.whenNoneLost();
    // The term the fence checks this write under is the term its TXN carries, even if the node
    // learns a newer one while the write runs.
    const writeTerm = this.#host.term();
    if (ranUnderTerm && term !== writeTerm) {
      if (term !== null) this.#host.emit({ kind: 'staleTerm', term: writeTerm, given: term });
      throw this.#host.notLeader('STALE_TERM', `this transaction ran under term ${term ?? 0}, and the node has since moved to term ${writeTerm}; it was rolled back: retry it`);
    }
    if (this.#host.isLeader() && this.#host.limboEntries() + this.#beforeLimbo >= limits.limboEntriesMax) {
      throw new QsyncError('LIMBO_FULL', `the limbo holds ${limits.limboEntriesMax} transactions waiting for a quorum; retry later`);
    }
    let reserved: Lsn | null = null;
    let journaled = false;
    /** The PREPARE was sent: its gid may be prepared in PostgreSQL whatever the write's outcome. */
    let prepareSent: string | null = null;
    /** The async TXN once durable: from then on the write will commit, here too. */
    let asyncTxn: TxnRecord | null = null;
    let waiting: Promise<void> | null = null;
    /** Held open (RFC 0027): resolved once its TXN is durable; its answer is the limbo's from then on. */
    let heldJournaled: (() => void) | null = null;
    /** The write is held open (the hold step ran): not an async write, whose COMMIT the write still awaits. */
    let isHeld = false;
    const txnOf = ({ lsn, gid, time, sync, changes }: { lsn: Lsn; gid: string; time: number; sync: boolean; changes: TxnRecord['changes'] }): TxnRecord => ({
      kind: 'txn', replica: this.#host.self, lsn, term: writeTerm, time, gid, sync, changes, idempotencyKey,
    });
    let counted = true;
    let inFlight: Lsn | null = null;
    const uncount = (): void => {
      if (counted) this.#beforeLimbo -= 1;
      counted = false;
    };
    this.#beforeLimbo += 1;
    try {
      const steps: WriteSteps = {
        // One time per write, read at capture: it stamps the async keys' versions and travels
        // in the TXN, so last-writer-wins compares the same value on every node.
        reserve: () => {
          const r = this.#own.reserve();
          reserved = r.lsn;
          return { ...r, time: this.#host.now() };
        },
        journal: async (entry) => {
          const { lsn, gid, sync } = entry;
          journaled = true;
          written.mode = sync ? 'sync' : 'async';
          if (sync) written.limboSince = this.#clock.nowMs();
          uncount(); // from here on the limbo counts it
          if (sync) {
            waiting = this.#host.waitFor(gid);
            // It may be settled while the TXN is still being journaled (a full limbo, a lost leadership),
            // before the await below: that must not count as an unhandled rejection, which ends the process.
            waiting.catch(() => undefined);
          }
          const txn = txnOf(entry);
          if (!sync) {
            this.#ownInFlight.add(lsn);
            inFlight = lsn;
          }
          await this.#own.submit(txn);
          if (!sync) asyncTxn = txn;
          this.#host.ownDurable();
          if (isHeld) heldJournaled?.();
        },
        prepareSent: (gid) => {
          prepareSent = gid;
        },
        held: () => {
          const held = this.#host.held;
          if (held === null) return null;
          return this.#bugs.heldUnchecked === true ? [] : held.xids();
        },
        hold: (txn, xid, session) => {
          const held = this.#host.held;
          if (held === null) throw new Error('a write was held open on a node that prepares its sync writes');
          isHeld = true;
          return held.hold(txnOf({ ...txn, sync: true }), xid, session);
        },
        unhold: (gid) => this.#host.held?.unhold(gid),
      };
      const journaledHeld = new Promise<null>((resolve) => (heldJournaled = () => resolve(null)));
      const ordered = order({ term: writeTerm, replica: this.#host.self, idempotencyKey }, steps);
      // A write held open keeps its transaction (and its connection) until the limbo's decision is carried
      // out on it, which may come long after its client hears OUTCOME_UNKNOWN: once its TXN is durable, its
      // answer is the limbo's alone, and the held entry ends the transaction (held.ts).
      const outcome = held === null ? await ordered : await Promise.race([ordered, journaledHeld]);
      if (outcome === null) void ordered.catch(() => undefined);
      // Nothing replicated was written: a plain local commit, and the lsn goes back.
      else if (outcome.kind === 'empty') {
        written.mode = 'local';
        this.#own.release(outcome.lsn, this.#host.term(), this.#host.now());
      }
      if (waiting !== null) await waiting;
    } catch (caught) {
      let error = caught;
      const ended = heldEnded(caught);
      if (ended !== null) {
        this.#host.held?.ended(ended);
        error = new QsyncError('ROLLED_BACK', `this write was rolled back before it was journaled: a write held open before it ended with its session, and this one may have taken its rows; retry it (${(caught as Error).message})`);
      }
      if (reserved !== null && !journaled) {
        if (prepareSent === null || this.#bugs.orphanKept === true) {
          this.#own.release(reserved, this.#host.term(), this.#host.now());
        } else {
          // PostgreSQL may hold the gid prepared (the PREPARE's answer lost to a crash): the lsn is filled,
          // never handed to another write under the same gid, and the orphan is rolled back.
          void this.#own.fill(reserved, this.#host.term(), this.#host.now());
          this.#host.orphaned(prepareSent);
        }
      }
      if (asyncTxn === null) throw error;
      await this.#commitJournaled(asyncTxn, error);
    } finally {
      uncount();
      if (inFlight !== null) this.#ownInFlight.delete(inFlight);
    }
  }

  /**
   * An async write of this node is journaled, so every peer will apply it,
   * but its COMMIT failed here (PostgreSQL went away, most often). Apply it
   * from its TXN, unless this very lsn reached PostgreSQL after all: then it
   * has committed here too, and its client hears so. If the node stops first,
   * its next start applies it (#replay) and the client hears OUTCOME_UNKNOWN.
   */
  async #commitJournaled(txn: TxnRecord, error: unknown): Promise<void> {
    this.#host.log.warn({ lsn: txn.lsn, err: (error as Error).message }, 'the COMMIT of a journaled async write failed; applying it from the journal');
    try {
      await this.#host.inQueue('applying a journaled write whose COMMIT failed', () => this.#db.apply(txn, { prepare: false, exact: true }), { lsn: txn.lsn });
    } catch {
      throw new QsyncError('OUTCOME_UNKNOWN', `write ${txn.gid} is journaled and will be applied, but the node stopped before PostgreSQL held it; ask for its outcome by idempotency key`);
    }
  }

  outcome(idempotencyKey: string): Promise<unknown> {
    return this.#db.outcome(idempotencyKey);
  }

  /**
   * Set a table's mode on every node: here first, then through a CONFIG
   * record that each node applies in journal order, with the table's shape,
   * which each node checks its own table against. A table that becomes
   * replicated brings the rows it holds here: copied in the same transaction
   * (writers wait on the new triggers' lock), they follow the CONFIG as TXNs,
   * so every write after them is captured and none is both copied and
   * captured. The lsns are reserved before that transaction commits: no
   * captured write can come before the CONFIG. Only the leader does it.
   */
  async setTableMode(table: string, mode: TableMode): Promise<{ table: string; mode: TableMode; copiedRows: number }> {
    if (!this.#host.isLeader()) throw this.#host.notLeader('NOT_LEADER', `node ${this.#host.self} is not the leader; change table modes through ${this.#host.leaderName()}`);
    const { name, shape, lsn: configLsn, copied } = await this.#reserving((reserve) => this.#db.setTableMode(table, mode, { leader: { replica: this.#host.self, reserve } }));
    assert(configLsn !== null, `the mode of ${name} changed without a CONFIG lsn`);
    const term = this.#host.term();
    const time = this.#host.now();
    const durable = [
      this.#own.submit({ kind: 'config', replica: this.#host.self, lsn: configLsn, term, time, tables: { [name]: mode }, ...(mode === 'local' ? {} : { shapes: { [name]: shape } }) }),
      ...copied.map((chunk) => this.#own.submit({ kind: 'txn', replica: this.#host.self, lsn: chunk.lsn, term, time, gid: chunk.gid, sync: false, changes: [{ table: name, op: 'copy', rows: chunk.rows, columns: chunk.columns }], idempotencyKey: null })),
    ];
    await Promise.all(durable);
    this.#host.ownDurable();
    const copiedRows = copied.reduce((sum, chunk) => sum + chunk.count, 0);
    if (copiedRows > 0) this.#host.log.info({ table: name, mode, rows: copiedRows, records: copied.length }, 'copied the rows the table held to every node through the journal');
    return { table: name, mode, copiedRows };
  }

  /**
   * Run a schema change on every node: here first, in a transaction that
   * holds its locks (an ALTER TABLE keeps the table's writers out), then
   * through a CONFIG record each node runs in journal order. Its lsn is
   * reserved once the locks are held and before the commit: what it waited
   * for comes before it in the journal, every write captured after it
   * follows it. Only the leader does it.
   */
  async runDdl(sql: string, role?: string): Promise<{ lsn: Lsn }> {
    if (!this.#host.isLeader()) throw this.#host.notLeader('NOT_LEADER', `node ${this.#host.self} is not the leader; run schema changes through ${this.#host.leaderName()}`);
    if (sql.trim() === '' || Buffer.byteLength(sql) > limits.ddlBytesMax) throw new QsyncError('BAD_REQUEST', `a schema change is SQL of 1 to ${limits.ddlBytesMax} bytes`);
    if (/^\s*(BEGIN|COMMIT|ROLLBACK|START\s+TRANSACTION|END)\b|;\s*(BEGIN|COMMIT|ROLLBACK|START\s+TRANSACTION|END)\b/i.test(sql)) {
      throw new QsyncError('BAD_REQUEST', 'qsync ddl runs the SQL in a transaction of its own on every node: leave out BEGIN, COMMIT and ROLLBACK');
    }
    const { lsn } = await this.#reserving((reserve) => this.#db.runDdl(sql, this.#host.self, () => reserve().lsn, role));
    await this.#own.submit({ kind: 'config', replica: this.#host.self, lsn, term: this.#host.term(), time: this.#host.now(), ddl: sql, ...(role === undefined ? {} : { ddlRole: role }) });
    this.#host.ownDurable();
    this.#host.log.info({ lsn }, 'schema change applied here and journaled for every node');
    return { lsn };
  }

  /**
   * Run leader work that reserves own lsns inside its PostgreSQL transaction;
   * if it fails, every lsn it reserved is given back (or filled), so the
   * journal has no gap.
   */
  async #reserving<T>(work: (reserve: () => { lsn: Lsn; gid: string }) => Promise<T>): Promise<T> {
    const reserved: Lsn[] = [];
    try {
      return await work(() => {
        const r = this.#own.reserve();
        reserved.push(r.lsn);
        return r;
      });
    } catch (error) {
      for (const lsn of reserved.reverse()) this.#own.release(lsn, this.#host.term(), this.#host.now());
      throw error;
    }
  }
}
