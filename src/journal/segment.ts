// Segment files: `<vclock sum at start, 20 digits>.qsj`. The first frame of a
// segment is its header: format version, the vclock at its start and the
// local Raft state (term, vote) at its start, so that removing older
// segments never loses the last vote.
import { codec } from '../core/record.js';
import { isReplicaId, isTerm, type ReplicaId, type Term } from '../core/types.js';
import { vclockParse, vclockSum, type VClock } from '../core/vclock.js';
import { encodeFrame } from './frame.js';

export const SEGMENT_SUFFIX = '.qsj';
const SEGMENT_PATTERN = /^(\d{20})\.qsj$/;
const MAGIC = 'qsync-journal';
const FORMAT_VERSION = 1;

export interface RaftState {
  readonly term: Term;
  readonly vote: ReplicaId;
}

export interface SegmentHeader {
  readonly vclock: VClock;
  readonly raft: RaftState | null;
}

/** A segment as the journal tracks it. Only the active (last) segment grows. */
export interface Segment {
  readonly name: string;
  readonly path: string;
  readonly sum: number;
  readonly start: SegmentHeader;
  readonly headerBytes: number;
  /** Bytes known durable: readers never read past this. */
  durableBytes: number;
}

export function segmentName(start: VClock): string {
  return `${String(vclockSum(start)).padStart(20, '0')}${SEGMENT_SUFFIX}`;
}

export function parseSegmentName(name: string): number | null {
  const match = SEGMENT_PATTERN.exec(name);
  return match?.[1] === undefined ? null : Number(match[1]);
}

export function encodeSegmentHeader(header: SegmentHeader): Buffer {
  const body: Record<string, unknown> = { m: MAGIC, v: FORMAT_VERSION, vc: header.vclock };
  if (header.raft !== null) {
    body.rt = header.raft.term;
    body.rv = header.raft.vote;
  }
  return encodeFrame(codec.pack(body));
}

/** The header, or a sentence saying why this is not a segment header qsync can read. */
export function decodeSegmentHeader(body: Buffer): SegmentHeader | string {
  let value: unknown;
  try {
    value = codec.unpack(body);
  } catch {
    return 'header is not valid msgpack';
  }
  if (typeof value !== 'object' || value === null) return 'header is not a map';
  const h = value as Record<string, unknown>;
  if (h.m !== MAGIC) return 'not a qsync journal segment';
  if (h.v !== FORMAT_VERSION) return `journal format version ${String(h.v)} is not supported (this qsync reads version ${FORMAT_VERSION})`;
  const vclock = vclockParse(h.vc);
  if (typeof vclock === 'string') return `header vclock: ${vclock}`;
  if (h.rt === undefined && h.rv === undefined) return { vclock, raft: null };
  if (!isTerm(h.rt) || !isReplicaId(h.rv)) return 'header raft state is malformed';
  return { vclock, raft: { term: h.rt, vote: h.rv } };
}
