// The journal's checkpoint: where the journal starts once older segments are
// removed, and what the records it no longer holds decided (the limbo
// history as plain data, opaque here). One small file, replaced atomically
// (write a temporary file, fsync, rename, fsync the directory), framed with
// a checksum like every record.
//
// Removing segments (trim) and replacing the whole journal (rebase, after a
// rejoin by snapshot) both write the checkpoint first and change segment
// files after it; a crash in between is finished at the next open
// (finishInterrupted), so the checkpoint and the first segment always agree.
import { readFile, readdir, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { codec } from '../core/record.js';
import { vclockCompare, vclockFormat, vclockParse, type VClock } from '../core/vclock.js';
import { encodeFrame, readFrame } from './frame.js';
import { fsyncDir, writeDurable } from './fsutil.js';
import { decodeSegmentHeader, parseSegmentName, segmentName } from './segment.js';

export const CHECKPOINT_FILE = 'checkpoint.qsc';
/** A rebased journal's first segment, written whole before the old segments go. */
export const REBASE_FILE = 'rebase.qsj.tmp';

export interface Checkpoint {
  /** The first segment's start: every record before it was removed. */
  readonly vclock: VClock;
  /** What the removed records decided (core/history.ts HistoryState), opaque to the journal. */
  readonly state: unknown;
}

export class CheckpointUnreadable extends Error {
  constructor(path: string, reason: string) {
    super(`journal checkpoint ${path} cannot be read: ${reason}. Restore it from a backup, or move the data directory aside and let the node rejoin by snapshot`);
  }
}

export async function readCheckpoint(dir: string): Promise<Checkpoint | null> {
  const path = join(dir, CHECKPOINT_FILE);
  let buffer: Buffer;
  try {
    buffer = await readFile(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
  const frame = readFrame(buffer, 0);
  if (frame.kind !== 'frame') throw new CheckpointUnreadable(path, frame.kind === 'corrupt' ? frame.reason : 'it is cut short');
  let body: unknown;
  try {
    body = codec.unpack(frame.body);
  } catch {
    throw new CheckpointUnreadable(path, 'it is not valid msgpack');
  }
  const b = body as Record<string, unknown>;
  const vclock = vclockParse(b?.vc);
  if (typeof vclock === 'string') throw new CheckpointUnreadable(path, `vclock: ${vclock}`);
  return { vclock, state: b.h };
}

export async function writeCheckpoint(dir: string, checkpoint: Checkpoint): Promise<void> {
  const path = join(dir, CHECKPOINT_FILE);
  const temporary = `${path}.tmp`;
  await writeDurable(temporary, encodeFrame(codec.pack({ vc: checkpoint.vclock, h: checkpoint.state })));
  await rename(temporary, path);
  await fsyncDir(dir);
}

/**
 * Finish what a crash interrupted, before the segments are recovered: a
 * rebase whose checkpoint was written (its new segment replaces every old
 * one) or not (the new segment goes); a trim whose checkpoint was written
 * (the segments before the checkpoint's go).
 */
export async function finishInterrupted(dir: string, checkpoint: Checkpoint | null): Promise<void> {
  const files = await readdir(dir);
  const names = files.filter((n) => parseSegmentName(n) !== null).sort();
  if (files.includes(REBASE_FILE)) {
    const path = join(dir, REBASE_FILE);
    const frame = readFrame(await readFile(path), 0);
    const header = frame.kind === 'frame' ? decodeSegmentHeader(frame.body) : 'torn';
    if (typeof header !== 'string' && checkpoint !== null && vclockCompare(header.vclock, checkpoint.vclock, { ignoreLocal: false }) === 'equal') {
      for (const name of names) await unlink(join(dir, name));
      await rename(path, join(dir, segmentName(header.vclock)));
    } else {
      await unlink(path);
    }
    await fsyncDir(dir);
    return;
  }
  if (checkpoint === null) return;
  const first = segmentName(checkpoint.vclock);
  if (!names.includes(first)) {
    if (names.length > 0 && names[0] as string < first) throw new CheckpointUnreadable(join(dir, CHECKPOINT_FILE), `it says the journal starts at ${vclockFormat(checkpoint.vclock)}, and no segment ${first} exists`);
    return;
  }
  const before = names.filter((n) => n < first);
  for (const name of before) await unlink(join(dir, name));
  if (before.length > 0) await fsyncDir(dir);
}
