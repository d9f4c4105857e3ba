// A journal cursor: every record after a vclock, in journal order, read from
// the segment files and then, with `follow`, from records appended later.
//
// The cursor reads files only up to each segment's durable size, so it never
// sees a batch that is still being written. A batch the journal still holds
// in memory (the last few made durable) it takes from there, as written, so
// that a cursor at the tail does not read back and decode what was just
// appended. An open segment file stays readable after removeBelow unlinks it.
import { open, type FileHandle } from 'node:fs/promises';
import { JournalCorrupt, QsyncError } from '../core/errors.js';
import { limits } from '../core/limits.js';
import { decodeRecord, type JournalRecord } from '../core/record.js';
import { REPLICA_LOCAL } from '../core/types.js';
import { vclockGet, type VClock } from '../core/vclock.js';
import { readFrame } from './frame.js';
import type { Segment } from './segment.js';

/** A batch as the journal wrote it: its records, and where its frames end in their segment. */
export interface RecentBatch {
  readonly end: number;
  readonly bytes: number;
  readonly records: readonly JournalRecord[];
}

export interface CursorOptions {
  /** Also return local RAFT records (replica 0). Default false: a relay never sends them. */
  readonly includeLocal?: boolean;
  /** After the last durable record, wait for more instead of ending. Default false. */
  readonly follow?: boolean;
}

/** What a cursor needs from its journal. */
export interface CursorSource {
  readonly closed: boolean;
  /** The first segment whose sum is above `sum` (the first segment for null). */
  segmentAfter(sum: number | null): Segment | undefined;
  /** Resolves when more records are durable, a segment is added, or the journal closes. */
  waitForDurable(): Promise<void>;
  /** The batch made durable at `offset` of `segment`, if it is still in memory. */
  recentAt(segment: Segment, offset: number): RecentBatch | undefined;
  /** Bumped when the journal is replaced (rebase): an older cursor has nothing left to read. */
  readonly generation: number;
  /** The cursor is done: segments it read may be removed. */
  cursorDone(cursor: JournalCursor): void;
}

class JournalGap extends QsyncError<'JOURNAL_GAP'> {
  constructor(message: string) {
    super('JOURNAL_GAP', message);
  }
}

export class JournalCursor implements AsyncIterableIterator<JournalRecord> {
  readonly #source: CursorSource;
  readonly #from: VClock;
  readonly #includeLocal: boolean;
  readonly #follow: boolean;
  #segment: Segment;
  #handle: FileHandle | null = null;
  #offset: number;
  #ready: JournalRecord[] = [];
  #done = false;
  readonly #generation: number;

  constructor(source: CursorSource, start: Segment, from: VClock, options: CursorOptions, generation: number) {
    this.#source = source;
    this.#generation = generation;
    this.#segment = start;
    this.#offset = start.headerBytes;
    this.#from = from;
    this.#includeLocal = options.includeLocal ?? false;
    this.#follow = options.follow ?? false;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  /** The segment being read: it and later ones are kept while the cursor is open. */
  get segmentSum(): number {
    return this.#done ? Infinity : this.#segment.sum;
  }

  async next(): Promise<IteratorResult<JournalRecord>> {
    for (;;) {
      const record = this.#ready.shift();
      if (record !== undefined) return { done: false, value: record };
      if (this.#done) return this.return();
      if (this.#source.generation !== this.#generation) {
        await this.return();
        throw new JournalGap('the journal was replaced by a snapshot (rejoin) while this cursor read it; subscribe again');
      }
      if (this.#offset < this.#segment.durableBytes) {
        // At the tail the records are still in memory, as written: no read back, no decoding.
        const recent = this.#source.recentAt(this.#segment, this.#offset);
        if (recent === undefined) {
          await this.#readChunk();
          continue;
        }
        for (const record of recent.records) if (this.#wanted(record)) this.#ready.push(record);
        this.#offset = recent.end;
        continue;
      }
      const next = this.#source.segmentAfter(this.#segment.sum);
      if (next !== undefined) {
        await this.#handle?.close();
        this.#handle = null;
        this.#segment = next;
        this.#offset = next.headerBytes;
        continue;
      }
      // Caught up: a closed journal ends even a following cursor.
      if (!this.#follow || this.#source.closed) return this.return();
      await this.#source.waitForDurable();
    }
  }

  async return(): Promise<IteratorResult<JournalRecord>> {
    this.#done = true;
    this.#source.cursorDone(this);
    this.#ready = [];
    await this.#handle?.close();
    this.#handle = null;
    return { done: true, value: undefined };
  }

  /** Read whole frames from the current offset, at most one chunk (or one frame if larger), up to the durable end. */
  async #readChunk(): Promise<void> {
    this.#handle ??= await open(this.#segment.path, 'r');
    const end = this.#segment.durableBytes;
    let length = Math.min(limits.journalCursorChunkBytes, end - this.#offset);
    let buffer = await this.#read(length);
    const header = readFrame(buffer, 0);
    if (header.kind === 'incomplete' && header.bytes !== null && header.bytes > length) {
      length = Math.min(header.bytes, end - this.#offset);
      buffer = await this.#read(length);
    }
    let at = 0;
    while (at < buffer.length) {
      const frame = readFrame(buffer, at);
      // A frame cut by the chunk's end is read whole with the next chunk.
      if (frame.kind === 'incomplete' && at > 0) break;
      if (frame.kind !== 'frame') throw this.#corrupt(at, frame.kind === 'corrupt' ? frame.reason : 'frame crosses the durable end');
      const decoded = decodeRecord(frame.body);
      if (!decoded.ok) throw this.#corrupt(at, decoded.error.message);
      if (this.#wanted(decoded.record)) this.#ready.push(decoded.record);
      at = frame.end;
    }
    this.#offset += at;
  }

  async #read(length: number): Promise<Buffer> {
    const buffer = Buffer.allocUnsafe(length);
    let filled = 0;
    while (filled < length) {
      const { bytesRead } = await (this.#handle as FileHandle).read(buffer, filled, length - filled, this.#offset + filled);
      if (bytesRead === 0) throw this.#corrupt(filled, 'file is shorter than its durable size');
      filled += bytesRead;
    }
    return buffer;
  }

  #wanted(record: JournalRecord): boolean {
    if (record.replica === REPLICA_LOCAL && !this.#includeLocal) return false;
    return record.lsn > vclockGet(this.#from, record.replica);
  }

  #corrupt(at: number, reason: string): JournalCorrupt {
    return new JournalCorrupt(this.#segment.name, this.#offset + at, reason, 'A durable record no longer reads back: the disk or the file was damaged after it was written.');
  }
}
