// The sidecar's append-only journal (DESIGN.md §4).
//
// append(record) ──► queue ──► one synchronous write per batch ──► resolve
//                      │              (group commit; O_DSYNC: the write returns once durable)
//                      └─ lsn order checked at call time, so the queue is
//                         always in per-replica lsn order
//
// Invariant: tailVclock covers vclock; both only grow.
// Invariant: a record's promise resolves only after its bytes are durable (a
//            write to a file opened O_DSYNC returns once it is, as fdatasync).
// Invariant: after a failed write or fsync the journal accepts nothing more
//            (fsync errors are not retried: the page cache may have dropped
//            the data, PostgreSQL's "fsyncgate").
import { open, readFile, rename, rm, unlink, writeFile, mkdir, type FileHandle } from 'node:fs/promises';
import { constants } from 'node:fs';
import { join } from 'node:path';
import { QsyncError, type ErrorCode } from '../core/errors.js';
import { limits } from '../core/limits.js';
import { encodeRecord, type JournalRecord } from '../core/record.js';
import { assert } from '../core/assert.js';
import { REPLICA_LOCAL } from '../core/types.js';
import { vclockCompare, vclockCovers, vclockEntries, vclockFollow, vclockFormat, vclockFromEntries, vclockGet, vclockSum, type VClock } from '../core/vclock.js';
import { JournalCursor, type CursorOptions, type RecentBatch, type CursorSource } from './cursor.js';
import { encodeFrame } from './frame.js';
import { fsyncDir, writeAll, writeDurable } from './fsutil.js';
import { finishInterrupted, readCheckpoint, REBASE_FILE, writeCheckpoint, type Checkpoint } from './checkpoint.js';
import { recoverJournal, type JournalCut } from './recovery.js';
import { encodeSegmentHeader, segmentName, type RaftState, type Segment } from './segment.js';
import { processAlive } from '../os/process.js';

/** The active segment is written with O_DSYNC: each write returns once its data is durable, as with fdatasync after it. */
const SEGMENT_FLAGS = constants.O_RDWR | constants.O_DSYNC;

export interface JournalOptions {
  readonly dir: string;
  /** A segment that has reached this size is closed and a new one started. */
  readonly segmentBytesMax?: number;
  /** Told of each batch made durable: its records, bytes, and milliseconds to write and fdatasync (metrics). */
  readonly onBatch?: (batch: { readonly records: number; readonly bytes: number; readonly ms: number }) => void;
  /** Cut at corruption found in an older segment instead of refusing to open (drops later segments). */
  readonly repair?: boolean;
  /** How long a batch of CONFIRMs alone waits for another record to share its fsync (default limits.journalConfirmWaitMs; 0: never). */
  readonly confirmWaitMs?: number;
}

export interface RecoveryReport {
  readonly segments: number;
  readonly records: number;
  readonly vclock: VClock;
  readonly cuts: readonly JournalCut[];
}

export interface JournalStats {
  readonly appends: number;
  readonly batches: number;
  readonly fsyncs: number;
  readonly bytesWritten: number;
}

export class JournalError extends QsyncError<Extract<ErrorCode, `JOURNAL_${string}`>> {}

interface Pending {
  readonly record: JournalRecord;
  readonly frame: Buffer;
  /** Clock after this record: the journal's durable clock once its batch is synced. */
  readonly vclock: VClock;
  readonly resolve: () => void;
  readonly reject: (error: Error) => void;
}

const LOCK_FILE = 'LOCK';

export class Journal implements CursorSource {
  readonly dir: string;
  readonly recovery: RecoveryReport;
  readonly #segmentBytesMax: number;
  readonly #segments: Segment[];
  #handle: FileHandle;
  #vclock: VClock;
  #tailVclock: VClock;
  #raft: RaftState | null;
  #queue: Pending[] = [];
  #queueBytes = 0;
  #flushing: Promise<void> | null = null;
  /** Queued records that are not CONFIRMs: while there are none, queued CONFIRMs wait (RFC 0020). */
  #queuedOthers = 0;
  /** The CONFIRMs' wait is over: the timer ran; cleared once the queue is empty. */
  #confirmsDue = false;
  /** The timer of the CONFIRMs' wait; null when none waits. */
  #confirmWait: NodeJS.Timeout | null = null;
  readonly #confirmWaitMs: number;
  #failure: JournalError | null = null;
  #closed = false;
  #waiters: Array<() => void> = [];
  #stats = { appends: 0, batches: 0, fsyncs: 0, bytesWritten: 0 };
  #onBatch: JournalOptions['onBatch'] | null = null;
  #checkpoint: Checkpoint | null = null;
  /** Cursors not yet returned: trim keeps the segments they read. */
  readonly #cursors = new Set<JournalCursor>();
  /** Appends held while a rebase replaces the files; null when none runs. */
  #rebasing: Array<{ readonly record: JournalRecord; readonly resolve: () => void; readonly reject: (error: Error) => void }> | null = null;
  /** Bumped by rebase: a cursor opened before it ends with JOURNAL_GAP (what it would read next is gone). */
  #generation = 0;
  /**
   * The last batches made durable, by segment and offset: a following cursor
   * at the tail takes their records from here instead of reading and
   * decoding them back, once per link (RFC 0022). Bounded by bytes.
   */
  readonly #recent = new Map<string, RecentBatch>();
  #recentBytes = 0;

  private constructor(dir: string, segmentBytesMax: number, confirmWaitMs: number, segments: Segment[], handle: FileHandle, vclock: VClock, raft: RaftState | null, recovery: RecoveryReport) {
    this.dir = dir;
    this.#segmentBytesMax = segmentBytesMax;
    this.#confirmWaitMs = confirmWaitMs;
    this.#segments = segments;
    this.#handle = handle;
    this.#vclock = vclock;
    this.#tailVclock = vclock;
    this.#raft = raft;
    this.recovery = recovery;
  }

  /** Open (creating if needed) and recover the journal in `dir`. Holds a lock on it until close. */
  static async open(options: JournalOptions): Promise<Journal> {
    const segmentBytesMax = options.segmentBytesMax ?? limits.journalSegmentBytesDefault;
    await mkdir(options.dir, { recursive: true });
    await takeLock(options.dir);
    try {
      const checkpoint = await readCheckpoint(options.dir);
      await finishInterrupted(options.dir, checkpoint);
      const recovered = await recoverJournal(options.dir, options.repair ?? false);
      const segments = recovered.segments;
      if (segments.length === 0) segments.push(await createSegment(options.dir, { vclock: recovered.vclock, raft: recovered.raft }));
      const active = segments[segments.length - 1] as Segment;
      const handle = await open(active.path, SEGMENT_FLAGS);
      const report = { segments: segments.length, records: recovered.records, vclock: recovered.vclock, cuts: recovered.cuts };
      const journal = new Journal(options.dir, segmentBytesMax, options.confirmWaitMs ?? limits.journalConfirmWaitMs, segments, handle, recovered.vclock, recovered.raft, report);
      journal.#onBatch = options.onBatch ?? null;
      journal.#checkpoint = checkpoint;
      return journal;
    } catch (error) {
      await releaseLock(options.dir);
      throw error;
    }
  }

  /** Clock of the durable records. */
  get vclock(): VClock {
    return this.#vclock;
  }

  /** Clock including records accepted but not yet durable: the next lsn of replica r is tailVclock[r] + 1. */
  get tailVclock(): VClock {
    return this.#tailVclock;
  }

  /** The durable local Raft state (term and vote), or null if none was ever written. */
  get raft(): RaftState | null {
    return this.#raft;
  }

  stats(): JournalStats {
    return { ...this.#stats };
  }

  /**
   * Append a record; resolves once it is durable. The record's lsn must be
   * the next one of its replica (tailVclock + 1): records are queued, written
   * and synced in call order.
   */
  append(record: JournalRecord): Promise<void> {
    if (this.#rebasing !== null) {
      this.#tailVclock = vclockFollow(this.#tailVclock, record.replica, record.lsn);
      return new Promise((resolve, reject) => this.#rebasing?.push({ record, resolve, reject }));
    }
    const refused = this.#refusal(record);
    if (refused !== null) return Promise.reject(refused);
    let frame: Buffer;
    try {
      frame = encodeFrame(encodeRecord(record));
    } catch (error) {
      return Promise.reject(error as Error);
    }
    if (this.#queueBytes + frame.length > limits.journalQueueBytesMax) {
      return Promise.reject(new JournalError('JOURNAL_QUEUE_FULL', `journal queue holds ${this.#queueBytes} bytes not yet durable; the limit is ${limits.journalQueueBytesMax}`, { queueBytes: this.#queueBytes }));
    }
    this.#tailVclock = vclockFollow(this.#tailVclock, record.replica, record.lsn);
    this.#stats.appends += 1;
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ record, frame, vclock: this.#tailVclock, resolve, reject });
      this.#queueBytes += frame.length;
      if (record.kind !== 'confirm') this.#queuedOthers += 1;
      this.#schedule();
    });
  }

  /**
   * Start a flush on the next turn of the event loop, so that every append
   * made in this turn joins the same batch; unless a flush is under way
   * (it takes what is queued), or only CONFIRMs are queued: they wait up to
   * confirmWaitMs for another record to share their fsync (RFC 0020).
   * Nobody waits on a CONFIRM's durability meanwhile: the leader commits at
   * quorum, before its CONFIRM is durable, and a follower takes the verdict
   * from the history, at append.
   */
  #schedule(): void {
    if (this.#flushing !== null) return;
    if (this.#confirmsWait()) {
      this.#confirmWait ??= setTimeout(() => {
        this.#confirmWait = null;
        this.#confirmsDue = true;
        this.#schedule();
      }, this.#confirmWaitMs);
      return;
    }
    if (this.#confirmWait !== null) {
      clearTimeout(this.#confirmWait);
      this.#confirmWait = null;
    }
    this.#flushing = new Promise<void>((done) => setImmediate(() => void this.#flush().then(done)));
  }

  /** Only CONFIRMs are queued, and nothing asks for them yet (their wait, a close or a rebase). */
  #confirmsWait(): boolean {
    return this.#queuedOthers === 0 && !this.#confirmsDue && this.#confirmWaitMs > 0 && !this.#closed && this.#rebasing === null;
  }

  #refusal(record: JournalRecord): Error | null {
    if (this.#failure !== null) return this.#failure;
    if (this.#closed) return new JournalError('JOURNAL_CLOSED', 'journal is closed');
    const expected = vclockGet(this.#tailVclock, record.replica) + 1;
    if (record.lsn !== expected) {
      return new JournalError('JOURNAL_LSN_ORDER', `record ${record.replica}:${record.lsn} is out of order: the journal expects lsn ${expected} of replica ${record.replica} next`,
        { replica: record.replica, lsn: record.lsn, expected });
    }
    return null;
  }

  async #flush(): Promise<void> {
    try {
      while (this.#queue.length > 0 && this.#failure === null && !this.#confirmsWait()) await this.#writeBatch(this.#takeBatch());
    } finally {
      this.#flushing = null;
    }
    if (this.#queue.length === 0) this.#confirmsDue = false;
    else if (this.#failure === null) this.#schedule();
  }

  #takeBatch(): Pending[] {
    let bytes = 0;
    let count = 0;
    for (const pending of this.#queue) {
      if (count > 0 && bytes + pending.frame.length > limits.journalBatchBytesMax) break;
      bytes += pending.frame.length;
      count += 1;
    }
    const batch = this.#queue.splice(0, count);
    this.#queueBytes -= bytes;
    for (const pending of batch) if (pending.record.kind !== 'confirm') this.#queuedOthers -= 1;
    return batch;
  }

  async #writeBatch(batch: Pending[]): Promise<void> {
    try {
      if (this.#active.durableBytes >= this.#segmentBytesMax && this.#active.durableBytes > this.#active.headerBytes) await this.#rotate();
      const bytes = Buffer.concat(batch.map((p) => p.frame));
      const started = performance.now();
      // One request to the thread pool, not two (a write, then fdatasync): the file is O_DSYNC.
      await writeAll(this.#handle, bytes, this.#active.durableBytes);
      const ms = performance.now() - started;
      // An observer's failure is not the journal's: it must never fail the batch.
      try {
        this.#onBatch?.({ records: batch.length, bytes: bytes.length, ms });
      } catch {
        this.#onBatch = null;
      }
      this.#stats.batches += 1;
      this.#stats.fsyncs += 1;
      this.#stats.bytesWritten += bytes.length;
      this.#remember(this.#active, this.#active.durableBytes, bytes.length, batch);
      this.#active.durableBytes += bytes.length;
    } catch (cause) {
      this.#fail(batch, cause);
      return;
    }
    const last = batch[batch.length - 1] as Pending;
    this.#vclock = last.vclock;
    for (const pending of batch) {
      if (pending.record.kind === 'raft') this.#raft = { term: pending.record.term, vote: pending.record.vote };
      pending.resolve();
    }
    this.#wake();
  }

  #remember(segment: Segment, start: number, bytes: number, batch: readonly Pending[]): void {
    this.#recent.set(`${segment.name}@${start}`, { end: start + bytes, bytes, records: batch.map((p) => p.record) });
    this.#recentBytes += bytes;
    // A Map iterates in insertion order: the oldest batch goes first.
    for (const [key, old] of this.#recent) {
      if (this.#recentBytes <= limits.journalRecentBytesMax || this.#recent.size <= 1) break;
      this.#recent.delete(key);
      this.#recentBytes -= old.bytes;
    }
  }

  #fail(batch: Pending[], cause: unknown): void {
    this.#failure = new JournalError('JOURNAL_FAILED', `journal write failed in ${this.#active.name}; the journal accepts nothing more until reopened: ${(cause as Error).message}`,
      { segment: this.#active.name }, { cause });
    for (const pending of [...batch, ...this.#queue.splice(0)]) pending.reject(this.#failure);
    this.#queueBytes = 0;
    this.#queuedOthers = 0;
    this.#wake();
  }

  get #active(): Segment {
    return this.#segments[this.#segments.length - 1] as Segment;
  }

  /** Start a new segment at the durable clock. Called only between batches, so the old one is final. */
  async #rotate(): Promise<void> {
    const segment = await createSegment(this.dir, { vclock: this.#vclock, raft: this.#raft });
    const handle = await open(segment.path, SEGMENT_FLAGS);
    await this.#handle.close();
    this.#handle = handle;
    this.#segments.push(segment);
    this.#wake();
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }

  // ---- CursorSource --------------------------------------------------------------

  get closed(): boolean {
    return this.#closed || this.#failure !== null;
  }

  get generation(): number {
    return this.#generation;
  }

  cursorDone(cursor: JournalCursor): void {
    this.#cursors.delete(cursor);
  }

  segmentAfter(sum: number | null): Segment | undefined {
    return this.#segments.find((s) => sum === null || s.sum > sum);
  }

  waitForDurable(): Promise<void> {
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  recentAt(segment: Segment, offset: number): RecentBatch | undefined {
    return this.#recent.get(`${segment.name}@${offset}`);
  }

  /**
   * Read every record after `from`, in journal order, then (with `follow`)
   * every record appended later. Only durable records are returned.
   */
  cursor(from: VClock, options: CursorOptions = {}): JournalCursor {
    if (this.#rebasing !== null) throw new JournalError('JOURNAL_GAP', 'the journal is being replaced by a snapshot (a rejoin); subscribe again once it is done');
    const ignoreLocal = !(options.includeLocal ?? false);
    const oldest = this.#segments[0] as Segment;
    if (!vclockCovers(from, oldest.start.vclock, { ignoreLocal })) {
      throw new JournalError('JOURNAL_GAP', `records after ${vclockFormat(from)} are no longer in the journal: the oldest segment starts at ${vclockFormat(oldest.start.vclock)}`,
        { from, oldest: oldest.start.vclock });
    }
    // Start in the last segment that begins at or before `from`: everything before it is covered.
    let start = oldest;
    for (const segment of this.#segments) if (vclockCovers(from, segment.start.vclock, { ignoreLocal })) start = segment;
    const cursor = new JournalCursor(this, start, from, options, this.#generation);
    this.#cursors.add(cursor);
    return cursor;
  }

  // ---- retention -------------------------------------------------------------------

  /** The journal as the driver's retention sees it (sidecar/io.ts JournalRetention). */
  get retention(): this {
    return this;
  }

  /** Where the journal starts: every record before it was removed (the first segment's start). */
  get oldestVclock(): VClock {
    return (this.#segments[0] as Segment).start.vclock;
  }

  /** The checkpoint written when segments were last removed, or null if none ever were. */
  get checkpoint(): Checkpoint | null {
    return this.#checkpoint;
  }

  /** Where each segment after the first starts: the points trim can cut at. */
  get segmentStarts(): VClock[] {
    return this.#segments.slice(1).map((s) => s.start.vclock);
  }

  /** Bytes the segment files hold. */
  get sizeBytes(): number {
    return this.#segments.reduce((sum, s) => sum + s.durableBytes, 0);
  }

  /**
   * Remove the segments before the one that starts at `start`, first writing
   * the checkpoint (`state`: what their records decided). A segment a cursor
   * still reads stays: the next trim removes it. Returns the names removed.
   */
  async trim(start: VClock, state: unknown): Promise<string[]> {
    const index = this.#segments.findIndex((s) => vclockCompare(s.start.vclock, start, { ignoreLocal: false }) === 'equal');
    assert(index >= 0, `trim: no segment starts at ${vclockFormat(start)}`);
    if (index === 0) return [];
    await writeCheckpoint(this.dir, { vclock: start, state });
    this.#checkpoint = { vclock: start, state };
    return this.removeBelow(start);
  }

  /**
   * Replace the whole journal with one segment that starts at `start` (a
   * rejoin by snapshot: the snapshot holds what came before) and holds
   * `keep`, records of this node that its peers may lack. The new segment is
   * written first, then the checkpoint, then the old segments go (a crash
   * in between is finished at the next open). Cursors open on the old
   * journal end with JOURNAL_GAP: their subscribers subscribe again.
   */
  async rebase(from: VClock, keep: readonly JournalRecord[], state: unknown): Promise<void> {
    assert(this.#rebasing === null, 'rebase: one at a time');
    this.#rebasing = [];
    try {
      if (this.#queue.length > 0) this.#schedule();
      while (this.#flushing !== null) await this.#flushing;
      assert(this.#queue.length === 0 && this.#failure === null && !this.#closed, 'rebase: the journal must be idle and healthy');
      // The local component (RAFT records) goes on from here: the term and vote travel in the header.
      const start = vclockFromEntries([...vclockEntries(from).filter(([r]) => r !== REPLICA_LOCAL), ...(vclockGet(this.#vclock, REPLICA_LOCAL) > 0 ? [[REPLICA_LOCAL, vclockGet(this.#vclock, REPLICA_LOCAL)] as const] : [])]);
      await this.#rebaseTo(start, keep, state);
    } finally {
      // Appends made meanwhile (RAFT records) go on in the new journal.
      const held = this.#rebasing;
      this.#rebasing = null;
      this.#tailVclock = this.#vclock;
      for (const h of held) this.append(h.record).then(h.resolve, h.reject);
    }
  }

  async #rebaseTo(start: VClock, keep: readonly JournalRecord[], state: unknown): Promise<void> {
    let vclock = start;
    const frames: Buffer[] = [encodeSegmentHeader({ vclock: start, raft: this.#raft })];
    for (const record of keep) {
      assert(record.lsn === vclockGet(vclock, record.replica) + 1, `rebase: record ${record.replica}:${record.lsn} does not follow ${vclockFormat(vclock)}`);
      vclock = vclockFollow(vclock, record.replica, record.lsn);
      frames.push(encodeFrame(encodeRecord(record)));
    }
    const temporary = join(this.dir, REBASE_FILE);
    await writeDurable(temporary, Buffer.concat(frames));
    await writeCheckpoint(this.dir, { vclock: start, state });
    this.#checkpoint = { vclock: start, state };
    this.#generation += 1;
    this.#recent.clear();
    this.#recentBytes = 0;
    await this.#handle.close();
    // The list keeps the old segments until the new one is in place: status and readers see a whole journal.
    for (const segment of this.#segments) await unlink(segment.path);
    const name = segmentName(start);
    const path = join(this.dir, name);
    await rename(temporary, path);
    await fsyncDir(this.dir);
    const bytes = frames.reduce((sum, f) => sum + f.length, 0);
    const headerBytes = (frames[0] as Buffer).length;
    this.#segments.splice(0, this.#segments.length, { name, path, sum: vclockSum(start), start: { vclock: start, raft: this.#raft }, headerBytes, durableBytes: bytes });
    this.#handle = await open(path, SEGMENT_FLAGS);
    this.#vclock = vclock;
    this.#tailVclock = vclock;
    this.#wake();
  }

  /**
   * Remove the segments whose records are all covered by `vclock` (acknowledged
   * by every peer and applied by PostgreSQL). The active segment stays.
   * Returns the names removed.
   */
  async removeBelow(vclock: VClock): Promise<string[]> {
    const removed: string[] = [];
    const read = Math.min(...[...this.#cursors].map((c) => c.segmentSum));
    while (this.#segments.length > 1) {
      const next = this.#segments[1] as Segment;
      if (!vclockCovers(vclock, next.start.vclock) || (this.#segments[0] as Segment).sum >= read) break;
      const segment = this.#segments.shift() as Segment;
      await unlink(segment.path);
      removed.push(segment.name);
    }
    if (removed.length > 0) await fsyncDir(this.dir);
    return removed;
  }

  /** Wait for queued appends to become durable, then release the files. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#queue.length > 0) this.#schedule();
    while (this.#flushing !== null) await this.#flushing;
    await this.#handle.close();
    await releaseLock(this.dir);
    this.#wake();
  }
}

/** Create a segment with its header, durable with its directory entry. */
async function createSegment(dir: string, start: Segment['start']): Promise<Segment> {
  const name = segmentName(start.vclock);
  const path = join(dir, name);
  const header = encodeSegmentHeader(start);
  await writeDurable(path, header, 'wx');
  await fsyncDir(dir);
  return { name, path, sum: Number(name.slice(0, 20)), start, headerBytes: header.length, durableBytes: header.length };
}

/**
 * One process per journal: a second sidecar on the same data directory would
 * interleave lsns. The lock names its pid; a lock left by a dead process is taken over.
 */
async function takeLock(dir: string): Promise<void> {
  const path = join(dir, LOCK_FILE);
  try {
    await writeFile(path, `${process.pid}\n`, { flag: 'wx' });
    return;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  const pid = Number((await readFile(path, 'utf8')).trim());
  if (Number.isSafeInteger(pid) && pid > 0 && processAlive(pid)) {
    throw new JournalError('JOURNAL_LOCKED', `journal ${dir} is in use by process ${pid}; stop it first, or use another data directory`, { dir, pid });
  }
  await writeFile(path, `${process.pid}\n`);
}

async function releaseLock(dir: string): Promise<void> {
  await rm(join(dir, LOCK_FILE), { force: true });
}

