// Proves that every record survives encode → decode unchanged, and that the
// decoder turns any malformed body into a typed RecordInvalid, never a crash.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RecordInvalid } from '../../src/core/errors.js';
import { decodeMessage, encodeMessage, type PeerMessage } from '../../src/core/messages.js';
import { codec, decodeRecord, encodeRecord, type JournalRecord } from '../../src/core/record.js';
import type { Lsn, ReplicaId, Term } from '../../src/core/types.js';
import { recordArb } from '../support/arbitraries.js';

const txn: JournalRecord = {
  kind: 'txn', replica: 1 as ReplicaId, lsn: 7 as Lsn, term: 3 as Term, time: 1_700_000_000_000,
  gid: 'qsync:c1:1:7', sync: true, idempotencyKey: 'order-42',
  changes: [{ table: 'public.accounts', op: 'update', rows: '[{"id": 1, "balance": 10.50}]', oldKeys: '[{"id": 1}]' }],
};

function rejectReason(wire: unknown): string {
  const result = decodeRecord(codec.pack(wire));
  if (result.ok) throw new Error(`accepted ${JSON.stringify(wire)}`);
  expect(result.error).toBeInstanceOf(RecordInvalid);
  expect(result.error.code).toBe('RECORD_INVALID');
  return result.error.message;
}

describe('record encoding', () => {
  it('round-trips every record kind (fast-check)', () => {
    fc.assert(fc.property(recordArb, (record) => {
      const result = decodeRecord(encodeRecord(record));
      expect(result).toEqual({ ok: true, record });
    }));
  });

  it('keeps a TXN small: short keys, no shared structures', () => {
    const bytes = encodeRecord(txn);
    expect(bytes.length).toBeLessThan(130);
    expect(decodeRecord(bytes)).toEqual({ ok: true, record: txn });
  });

  it('rejects unknown kinds and wrong field types with the field named', () => {
    const good = codec.unpack(encodeRecord(txn) as Buffer) as Record<string, unknown>;
    expect(rejectReason({ ...good, k: 99 })).toMatch(/kind: unknown record kind 99/);
    expect(rejectReason({ ...good, k: 'txn' })).toMatch(/kind: unknown record kind "txn"/);
    expect(rejectReason({ ...good, l: -1 })).toMatch(/lsn: expected a positive integer/);
    expect(rejectReason({ ...good, l: 0 })).toMatch(/lsn/);
    expect(rejectReason({ ...good, t: 1.5 })).toMatch(/term: expected a non-negative integer, got the number 1.5/);
    expect(rejectReason({ ...good, r: 32 })).toMatch(/replica/);
    expect(rejectReason({ ...good, r: 0 })).toMatch(/cannot belong to replica 0/);
    expect(rejectReason({ ...good, g: 'x'.repeat(201) })).toMatch(/gid/);
    expect(rejectReason({ ...good, s: 1 })).toMatch(/sync: expected a boolean/);
    expect(rejectReason({ ...good, c: {} })).toMatch(/changes: expected an array/);
    expect(rejectReason({ ...good, c: [{ t: 'a', o: 9, r: [] }] })).toMatch(/changes\[0\]\.op: unknown operation 9/);
    expect(rejectReason({ ...good, c: [{ t: 'a', o: 1, r: [{ id: 1 }] }] })).toMatch(/changes\[0\]\.rows: expected the JSON text of an array of rows, got an array/);
    expect(rejectReason({ ...good, c: [{ t: 'a', o: 1, r: '{}' }] })).toMatch(/changes\[0\]\.rows: expected the JSON text/);
    expect(rejectReason({ ...good, c: [{ t: 'a', o: 1, r: '[]', ok: '[]' }] })).toMatch(/only an update carries old keys/);
    expect(rejectReason({ ...good, i: 5 })).toMatch(/idempotencyKey/);
    expect(rejectReason({ k: 7, r: 1, l: 1, t: 1, ts: 0, v: 0 })).toMatch(/raft record belongs to replica 0/);
    expect(rejectReason({ k: 6, r: 1, l: 1, t: 1, ts: 0, tb: { t: 'fast' } })).toMatch(/tables\.t: expected local, async or sync/);
    expect(rejectReason({ k: 2, r: 1, l: 1, t: 1, ts: 0, o: 0, u: 1 })).toMatch(/owner/);
    expect(rejectReason([1, 2])).toMatch(/body: expected a map, got an array/);
    expect(rejectReason(null)).toMatch(/body: expected a map, got null/);
  });

  it('rejects 64-bit integers that do not fit a safe integer instead of rounding them', () => {
    const bytes = Buffer.from(encodeRecord({ ...txn, lsn: 2 as Lsn }));
    // The lsn sits after the 'l' key; re-encode it as uint64 max by hand.
    const good = codec.unpack(bytes) as Record<string, unknown>;
    const wire = codec.pack({ ...good, l: 2n ** 64n - 1n });
    const result = decodeRecord(wire);
    expect(result.ok).toBe(false);
  });

  it('never throws on arbitrary bytes (fast-check)', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
      const result = decodeRecord(bytes);
      if (!result.ok) expect(result.error).toBeInstanceOf(RecordInvalid);
    }), { numRuns: 2000 });
  });

  it('never throws on single-byte corruption of a valid record (fast-check)', () => {
    const bytes = encodeRecord(txn);
    fc.assert(fc.property(fc.nat(bytes.length - 1), fc.integer({ min: 1, max: 255 }), (at, flip) => {
      const copy = Uint8Array.from(bytes);
      copy[at] = (copy[at] ?? 0) ^ flip;
      const result = decodeRecord(copy);
      if (!result.ok) expect(result.error).toBeInstanceOf(RecordInvalid);
    }));
  });

  it('rejects trailing bytes after the record', () => {
    const bytes = Buffer.concat([encodeRecord(txn), Buffer.from([0x01])]);
    const result = decodeRecord(bytes);
    expect(result.ok ? 'accepted' : result.error.message).toMatch(/holds 2 msgpack values/);
  });

  it('refuses to encode a record that recovery could not read back', () => {
    expect(() => encodeRecord({ ...txn, gid: '' } as JournalRecord)).toThrow(RecordInvalid);
    expect(() => encodeRecord({ ...txn, lsn: 1.5 as Lsn })).toThrow(/lsn/);
  });
});

describe('subscriptions and snapshots on the peer protocol', () => {
  it.each<PeerMessage>([
    { kind: 'subscribe', vclock: [0, 3] as Lsn[], snapshot: false },
    { kind: 'subscribe', vclock: [0, 3] as Lsn[], snapshot: true },
    { kind: 'refuse', reason: 'behind', gap: true },
    { kind: 'snapshot', floor: [1, 133] as Lsn[], history: { h: 1 }, tables: [{ name: 'public.items', mode: 'sync', shape: { columns: [['id', 'bigint']], key: ['id'] } }] },
    { kind: 'snapshotPart', table: 'public.items', columns: ['id', '"Name"'], rows: '1\tx\n', count: 1 },
    { kind: 'snapshotEnd', parts: 1 },
  ])('round-trips %j', (message) => {
    expect(decodeMessage(encodeMessage(message))).toEqual({ ok: true, message });
  });

  it.each([
    [{ m: 8, f: [0, 1], t: [{ n: 'public.t', o: 'local', c: [], k: [] }] }, /tables\[0\]\.mode/],
    [{ m: 8, f: 'x', t: [] }, /floor/],
    [{ m: 9, n: 'public.t', r: 5, c: 1 }, /snapshotPart/],
    [{ m: 9, n: 'public.t', r: '1\n', c: 1 }, /snapshotPart.columns/],
  ])('refuses a malformed snapshot message %j with a named field', (wire, reason) => {
    const result = decodeMessage(codec.pack(wire));
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.error.message).toMatch(reason);
  });
});

describe('election messages on the peer protocol', () => {
  const vclock = [0, 4, 2] as Lsn[];
  it.each<PeerMessage>([
    { kind: 'raft', message: { type: 'vote', term: 5 as Term, vclock, pre: true, force: false } },
    { kind: 'raft', message: { type: 'voteReply', term: 5 as Term, granted: true, pre: false } },
    { kind: 'raft', message: { type: 'heartbeat', term: 5 as Term, sentMs: 123 } },
    { kind: 'raft', message: { type: 'heartbeatReply', term: 5 as Term, sentMs: 123, vclock } },
    // A round number, for the read index; a peer that sends none is still understood (above).
    { kind: 'raft', message: { type: 'heartbeat', term: 5 as Term, sentMs: 123, seq: 7 } },
    { kind: 'raft', message: { type: 'heartbeatReply', term: 5 as Term, sentMs: 123, vclock, seq: 7 } },
    { kind: 'raft', message: { type: 'timeoutNow', term: 5 as Term } },
  ])('round-trips %j', (message) => {
    expect(decodeMessage(encodeMessage(message))).toEqual({ ok: true, message });
  });

  it.each([
    [{ m: 7, y: 1, t: 5, vc: [0, 1], p: 'yes', f: false }, /pre.*boolean/],
    [{ m: 7, y: 9, t: 5 }, /unknown election message type 9/],
    [{ m: 7, y: 3, t: -1, s: 1 }, /term/],
    [{ m: 7, y: 3, t: 5, s: 1, n: -2 }, /seq/],
    [{ m: 7, y: 4, t: 5, s: 1, vc: [0, 1], n: 'x' }, /seq/],
    [{ m: 7, y: 3, t: 1, s: 1.5 }, /sentMs/],
  ])('refuses malformed %j with a named field', (wire, reason) => {
    const result = decodeMessage(codec.pack(wire));
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.error.message).toMatch(reason);
  });
});
