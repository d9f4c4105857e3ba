// Vector clocks: replica id → lsn of the last record of that replica held.
//
// A VClock is an immutable dense array indexed by replica id (0..31) with
// trailing zeros trimmed, so that equal clocks have equal representations
// and encode to the same bytes. Component 0 counts local records (RAFT) that
// are never replicated; comparisons made for replication and voting ignore it
// (Tarantool's vclock_compare_ignore0). Immutability is the type's
// (`readonly`), not Object.freeze: freezing costs more than the whole
// append path of a record.
import { assert } from './assert.js';
import { isLsn, isReplicaId, REPLICA_ID_MAX, type Lsn, type ReplicaId } from './types.js';

export type VClock = readonly Lsn[];

export type VClockOrder = 'equal' | 'before' | 'after' | 'concurrent';

export interface CompareOptions {
  /** Leave out component 0 (local records). Default true: local records are never replicated. */
  readonly ignoreLocal?: boolean;
}

export const VCLOCK_EMPTY: VClock = Object.freeze([]);

function trim(components: Lsn[]): VClock {
  let length = components.length;
  while (length > 0 && components[length - 1] === 0) length -= 1;
  components.length = length;
  return components;
}

export function vclockGet(vclock: VClock, replica: ReplicaId): Lsn {
  return vclock[replica] ?? (0 as Lsn);
}

/**
 * Where a record (replica, lsn) stands against the vclock of what a node
 * holds: held already (a duplicate), the next one of its replica, or past a
 * gap. Only `next` may be journaled: a journal holds each replica's records
 * without holes, and a record past a gap from a peer is refused before any
 * of it reaches the journal or PostgreSQL.
 */
export function vclockPlace(vclock: VClock, replica: ReplicaId, lsn: Lsn): 'held' | 'next' | 'gap' {
  const last = vclockGet(vclock, replica);
  return lsn <= last ? 'held' : lsn === last + 1 ? 'next' : 'gap';
}

/** The clock after a record (replica, lsn); lsns of one replica only grow. */
export function vclockFollow(vclock: VClock, replica: ReplicaId, lsn: Lsn): VClock {
  assert(isReplicaId(replica), `replica id ${replica} out of range`);
  assert(lsn > vclockGet(vclock, replica), `lsn ${lsn} of replica ${replica} does not move past ${vclockGet(vclock, replica)}`);
  // On the append path of every record: copy and set, no re-trim needed
  // (the input is trimmed and lsn > 0, so the last component stays non-zero).
  const components = vclock.slice();
  while (components.length < replica) components.push(0 as Lsn);
  components[replica] = lsn;
  return components;
}

export function vclockFromEntries(entries: Iterable<readonly [ReplicaId, Lsn]>): VClock {
  const components: Lsn[] = [];
  for (const [replica, lsn] of entries) {
    assert(isReplicaId(replica) && isLsn(lsn), `bad vclock entry ${replica}:${lsn}`);
    while (components.length <= replica) components.push(0 as Lsn);
    components[replica] = lsn;
  }
  return trim(components);
}

export function vclockEntries(vclock: VClock): Array<[ReplicaId, Lsn]> {
  const entries: Array<[ReplicaId, Lsn]> = [];
  vclock.forEach((lsn, replica) => {
    if (lsn > 0) entries.push([replica as ReplicaId, lsn]);
  });
  return entries;
}

/**
 * How `a` stands to `b`: `before` when every component of a is <= b's and one
 * is smaller, `after` the mirror, `concurrent` when each is ahead somewhere.
 */
export function vclockCompare(a: VClock, b: VClock, options: CompareOptions = {}): VClockOrder {
  const first = options.ignoreLocal === false ? 0 : 1;
  let aAhead = false;
  let bAhead = false;
  for (let i = first; i < Math.max(a.length, b.length); i += 1) {
    const x = a[i] ?? 0;
    const y = b[i] ?? 0;
    if (x > y) aAhead = true;
    else if (y > x) bAhead = true;
  }
  if (aAhead && bAhead) return 'concurrent';
  if (aAhead) return 'after';
  if (bAhead) return 'before';
  return 'equal';
}

/** True when `a` holds everything `b` holds: a >= b on every component. */
export function vclockCovers(a: VClock, b: VClock, options: CompareOptions = {}): boolean {
  const order = vclockCompare(a, b, options);
  return order === 'equal' || order === 'after';
}

/** Component-wise maximum. */
export function vclockMerge(a: VClock, b: VClock): VClock {
  const components = Array.from({ length: Math.max(a.length, b.length) }, (_, i) =>
    Math.max(a[i] ?? 0, b[i] ?? 0) as Lsn,
  );
  return trim(components);
}

/** Sum of all components, local one included: the journal's position counter (segment names). */
export function vclockSum(vclock: VClock): number {
  let sum = 0;
  for (const lsn of vclock) sum += lsn;
  assert(Number.isSafeInteger(sum), 'vclock sum overflows a safe integer');
  return sum;
}

/** Records `want` holds that `have` lacks, summed over components (the local one left out): a lag. */
export function vclockMissing(have: VClock, want: VClock): number {
  let missing = 0;
  for (let i = 1; i < want.length; i += 1) missing += Math.max(0, (want[i] ?? 0) - (have[i] ?? 0));
  return missing;
}

/** A clock read from disk or the wire, or an error message saying what is wrong. */
export function vclockParse(value: unknown): VClock | string {
  if (!Array.isArray(value)) return 'not an array';
  if (value.length > REPLICA_ID_MAX + 1) return `more than ${REPLICA_ID_MAX + 1} components`;
  for (const [i, lsn] of value.entries()) {
    if (!isLsn(lsn)) return `component ${i} is not a non-negative safe integer`;
  }
  if (value.length > 0 && value[value.length - 1] === 0) return 'trailing zero component (not normalised)';
  return [...value] as VClock;
}

/** `{1: 5, 3: 9}` for logs and error messages. */
export function vclockFormat(vclock: VClock): string {
  return `{${vclockEntries(vclock).map(([replica, lsn]) => `${replica}: ${lsn}`).join(', ')}}`;
}
