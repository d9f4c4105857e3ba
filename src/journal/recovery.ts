// Journal recovery: read every segment to the first bad frame.
//
// A crash can only tear the tail of the last segment (each batch is one
// write followed by fdatasync, and a new segment is created only after the
// previous one is durable), so damage there is cut off and reported. Damage
// in an older segment is not a torn write: recovery refuses, naming the file
// and offset, unless the operator asks for `repair`, which cuts there and
// drops every later segment (peers resend what they hold).
import { readdir, readFile, open, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { JournalCorrupt } from '../core/errors.js';
import { decodeRecord } from '../core/record.js';
import { VCLOCK_EMPTY, vclockCompare, vclockFollow, vclockFormat, vclockGet, vclockSum, type VClock } from '../core/vclock.js';
import { readFrame } from './frame.js';
import { decodeSegmentHeader, parseSegmentName, type RaftState, type Segment } from './segment.js';
import { fsyncDir } from './fsutil.js';

export interface JournalCut {
  readonly segment: string;
  /** Where the kept part ends. */
  readonly offset: number;
  /** Bytes removed from this segment (the whole file when offset is 0). */
  readonly bytes: number;
  readonly reason: string;
  /** Later segments deleted by a repair. */
  readonly removedSegments: readonly string[];
}

export interface Recovered {
  readonly segments: Segment[];
  readonly vclock: VClock;
  readonly raft: RaftState | null;
  readonly records: number;
  readonly cuts: readonly JournalCut[];
}

interface Problem {
  readonly offset: number;
  readonly reason: string;
  /**
   * Damage a crash can leave: a short or checksum-failing frame. A frame
   * whose checksum holds but whose content is wrong (unknown kind, lsn out of
   * order, a segment that does not follow its predecessor) is never torn.
   */
  readonly torn: boolean;
}

export async function recoverJournal(dir: string, repair: boolean): Promise<Recovered> {
  const names = (await readdir(dir)).filter((n) => parseSegmentName(n) !== null).sort();
  const segments: Segment[] = [];
  const cuts: JournalCut[] = [];
  let vclock: VClock = VCLOCK_EMPTY;
  let raft: RaftState | null = null;
  let records = 0;

  for (const [i, name] of names.entries()) {
    const path = join(dir, name);
    const buffer = await readFile(path);
    const scanned = scanSegment(name, path, buffer, segments.length === 0 ? null : vclock);
    const isLast = i === names.length - 1;
    if (scanned.problem !== null && !repair && !(isLast && scanned.problem.torn)) {
      const why = isLast ? 'The frame is intact but its content is wrong, so this is not a torn write.' : 'It is not the last segment, so this is not a torn write.';
      throw new JournalCorrupt(name, scanned.problem.offset, scanned.problem.reason,
        `${why} Restore the file, or start with journal repair to cut the journal here and drop ${names.length - 1 - i} later segment(s); peers resend what they hold.`);
    }
    if (scanned.segment !== null) {
      segments.push(scanned.segment);
      vclock = scanned.vclock;
      raft = scanned.raft ?? raft;
      records += scanned.records;
    }
    if (scanned.problem !== null) {
      const removedSegments = names.slice(i + 1);
      await cutSegment(path, scanned.problem.offset);
      for (const later of removedSegments) await unlink(join(dir, later));
      await fsyncDir(dir);
      cuts.push({ segment: name, offset: scanned.problem.offset, bytes: buffer.length - scanned.problem.offset, reason: scanned.problem.reason, removedSegments });
      break;
    }
  }
  return { segments, vclock, raft, records, cuts };
}

interface Scanned {
  /** Null when even the header is unreadable: the whole file goes. */
  readonly segment: Segment | null;
  readonly vclock: VClock;
  readonly raft: RaftState | null;
  readonly records: number;
  readonly problem: Problem | null;
}

function scanSegment(name: string, path: string, buffer: Buffer, previousEnd: VClock | null): Scanned {
  const nothing = (problem: Problem): Scanned => ({ segment: null, vclock: previousEnd ?? VCLOCK_EMPTY, raft: null, records: 0, problem });
  const first = readFrame(buffer, 0);
  if (first.kind !== 'frame') return nothing({ offset: 0, reason: first.kind === 'incomplete' ? 'torn segment header' : `segment header: ${first.reason}`, torn: true });
  const header = decodeSegmentHeader(first.body);
  if (typeof header === 'string') return nothing({ offset: 0, reason: header, torn: false });
  if (vclockSum(header.vclock) !== parseSegmentName(name)) return nothing({ offset: 0, reason: `file name does not match its start vclock ${vclockFormat(header.vclock)}`, torn: false });
  if (previousEnd !== null && vclockCompare(header.vclock, previousEnd, { ignoreLocal: false }) !== 'equal') {
    return nothing({ offset: 0, reason: `starts at vclock ${vclockFormat(header.vclock)} but the previous segment ends at ${vclockFormat(previousEnd)}: a segment is missing or was altered`, torn: false });
  }

  let vclock = header.vclock;
  let raft = header.raft;
  let records = 0;
  let offset = first.end;
  let problem: Problem | null = null;
  while (offset < buffer.length) {
    const frame = readFrame(buffer, offset);
    if (frame.kind !== 'frame') {
      problem = { offset, reason: frame.kind === 'incomplete' ? `torn frame: ${buffer.length - offset} bytes of ${frame.bytes ?? 'a header of 8'}` : frame.reason, torn: true };
      break;
    }
    const decoded = decodeRecord(frame.body);
    if (!decoded.ok) {
      problem = { offset, reason: decoded.error.message, torn: false };
      break;
    }
    const { replica, lsn } = decoded.record;
    if (lsn !== vclockGet(vclock, replica) + 1) {
      problem = { offset, reason: `record ${replica}:${lsn} does not follow ${replica}:${vclockGet(vclock, replica)}`, torn: false };
      break;
    }
    vclock = vclockFollow(vclock, replica, lsn);
    if (decoded.record.kind === 'raft') raft = { term: decoded.record.term, vote: decoded.record.vote };
    records += 1;
    offset = frame.end;
  }
  const segment: Segment = { name, path, sum: vclockSum(header.vclock), start: header, headerBytes: first.end, durableBytes: problem?.offset ?? buffer.length };
  return { segment, vclock, raft, records, problem };
}

async function cutSegment(path: string, offset: number): Promise<void> {
  if (offset === 0) {
    await unlink(path);
    return;
  }
  const handle = await open(path, 'r+');
  try {
    await handle.truncate(offset);
    await handle.sync();
  } finally {
    await handle.close();
  }
}
