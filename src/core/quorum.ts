// Quorum maths, kept apart and small (etcd-io/raft's quorum package).
import { assert } from './assert.js';

/** The default quorum of a cluster of `members` nodes: a strict majority. */
export function quorumDefault(members: number): number {
  assert(Number.isSafeInteger(members) && members > 0, `cluster of ${members} members`);
  return Math.floor(members / 2) + 1;
}

/**
 * A configured quorum, or a sentence saying why it is refused. Below a
 * majority two disjoint quorums could confirm conflicting histories, so it
 * takes `force`.
 */
export function checkQuorum(quorum: number, members: number, force: boolean): string | null {
  if (!Number.isSafeInteger(quorum) || quorum < 1) return `quorum ${quorum} must be a positive integer`;
  if (quorum > members) return `quorum ${quorum} is more than the ${members} members: nothing could ever be confirmed`;
  if (quorum < quorumDefault(members) && !force) {
    return `quorum ${quorum} is below a majority of ${members} members (${quorumDefault(members)}): two halves of a partition could each confirm writes; set it only with the force option`;
  }
  return null;
}

/**
 * The highest value held by at least `quorum` of `values`: the quorum-th
 * largest. With fewer values than the quorum, 0 (nothing is held by a quorum).
 */
export function quorumValue(values: readonly number[], quorum: number): number {
  assert(quorum >= 1, 'quorum below 1');
  if (values.length < quorum) return 0;
  const sorted = [...values].sort((a, b) => b - a);
  return sorted[quorum - 1] as number;
}
