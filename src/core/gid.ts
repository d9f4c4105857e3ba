// Prepared-transaction ids: `qsync:<cluster>:<replica>:<lsn>`. Derived, never
// stored elsewhere, so that recovery can map any prepared transaction in
// PostgreSQL back to the journal entry it belongs to.
import { limits } from './limits.js';
import { isLsn, isReplicaId, type Lsn, type ReplicaId } from './types.js';

const CLUSTER_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;

export function isClusterId(value: string): boolean {
  return CLUSTER_PATTERN.test(value);
}

export function gidFor(clusterId: string, replica: ReplicaId, lsn: Lsn): string {
  const gid = `qsync:${clusterId}:${replica}:${lsn}`;
  if (!isClusterId(clusterId) || gid.length > limits.gidBytesMax) throw new RangeError(`cluster id ${JSON.stringify(clusterId)} must be 1-64 of A-Z a-z 0-9 _ . -`);
  return gid;
}

/** The owner and lsn of a qsync gid of this cluster, or null for anything else. */
export function parseGid(clusterId: string, gid: string): { replica: ReplicaId; lsn: Lsn } | null {
  const prefix = `qsync:${clusterId}:`;
  if (!gid.startsWith(prefix)) return null;
  const [replica, lsn, ...rest] = gid.slice(prefix.length).split(':').map(Number);
  if (rest.length > 0 || !isReplicaId(replica) || replica === 0 || !isLsn(lsn) || lsn === 0) return null;
  return { replica, lsn };
}

/** The prefix shared by every gid of a cluster, for listing them. */
export function gidPrefix(clusterId: string): string {
  return `qsync:${clusterId}:`;
}
