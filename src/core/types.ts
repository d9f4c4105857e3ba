// Branded integers: an Lsn cannot be passed where a Term is wanted.
declare const brand: unique symbol;
type Brand<T, B extends string> = T & { readonly [brand]: B };

/** Small integer naming a node, 1..31; 0 is the local, never-replicated component. */
export type ReplicaId = Brand<number, 'ReplicaId'>;
/** Per-replica sequence number of a record, from 1. */
export type Lsn = Brand<number, 'Lsn'>;
/** Raft term, from 0. */
export type Term = Brand<number, 'Term'>;

/** What the history holds of an entry: a quorum confirmed it, it was rolled back, or not yet decided (history.ts). */
export type HistoryVerdict = 'confirmed' | 'rolled-back' | null;

export const REPLICA_LOCAL = 0 as ReplicaId;
export const REPLICA_ID_MAX = 31;

export function isReplicaId(value: unknown): value is ReplicaId {
  return Number.isSafeInteger(value) && (value as number) >= 0 && (value as number) <= REPLICA_ID_MAX;
}

export function isLsn(value: unknown): value is Lsn {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

export function isTerm(value: unknown): value is Term {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

