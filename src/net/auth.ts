// HMAC-SHA256 challenge-response over the cluster secret. Each side sends a
// fresh nonce; each proves it knows the secret by an HMAC over both nonces,
// the cluster id, both replica ids and its role, so that a proof can be
// neither replayed nor reflected back by the other side.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { NONCE_BYTES } from '../core/messages.js';
import type { ReplicaId } from '../core/types.js';

export type Role = 'subscriber' | 'relay';

export function nonce(): Buffer {
  return randomBytes(NONCE_BYTES);
}

export function proof(secret: string, role: Role, cluster: string, from: ReplicaId, to: ReplicaId, fromNonce: Uint8Array, toNonce: Uint8Array): Buffer {
  return createHmac('sha256', secret).update(`qsync/1 ${role} ${cluster} ${from}->${to} `).update(fromNonce).update(toNonce).digest();
}

export function proofMatches(expected: Buffer, actual: Uint8Array): boolean {
  return actual.length === expected.length && timingSafeEqual(expected, actual);
}
