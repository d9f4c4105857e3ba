// Proves the client protocol's decoder: every request kind round-trips, and
// malformed requests become a typed RecordInvalid naming the field, never a crash.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeRequest, decodeResponse, encodeRequest, encodeResponse, type ClientRequest } from '../../src/core/client-protocol.js';
import { codec } from '../../src/core/record.js';
import type { Term } from '../../src/core/types.js';

const requests: ClientRequest[] = [
  { id: 1, op: 'auth', user: 'app', password: 'secret' },
  { id: 2, op: 'execute', statements: [{ sql: 'INSERT INTO t VALUES ($1)', params: [1] }], idempotencyKey: 'k', term: 3 as Term },
  { id: 3, op: 'execute', statements: [{ sql: 'SELECT 1', params: [] }], idempotencyKey: null, term: null },
  { id: 4, op: 'query', sql: 'SELECT $1::int', params: [5], consistency: 'leader' },
  { id: 5, op: 'query', sql: 'SELECT 1', params: [], consistency: 'local' },
  { id: 6, op: 'outcome', idempotencyKey: 'k' },
  { id: 7, op: 'table', table: 'public.t', mode: 'sync' },
  { id: 8, op: 'begin', idempotencyKey: null, term: null },
  { id: 9, op: 'tquery', tx: 8, sql: 'SELECT 1', params: [] },
  { id: 10, op: 'commit', tx: 8 },
  { id: 11, op: 'rollback', tx: 8 },
  { id: 12, op: 'ddl', sql: 'ALTER TABLE t ADD COLUMN c int' },
];

describe('client protocol', () => {
  it.each(requests.map((r) => [r.op, r] as const))('round-trips %s', (_op, request) => {
    expect(decodeRequest(encodeRequest(request))).toEqual({ ok: true, message: request });
  });

  it('round-trips answers and errors', () => {
    const ok = encodeResponse({ id: 1, result: [{ rows: [{ a: 1 }], rowCount: 1 }] });
    expect(decodeResponse(ok)).toEqual({ ok: true, message: { id: 1, result: [{ rows: [{ a: 1 }], rowCount: 1 }] } });
    const error = encodeResponse({ id: 2, error: { code: 'NOT_LEADER', message: 'no', leader: '127.0.0.1:7501', term: 4 } });
    expect(decodeResponse(error)).toEqual({ ok: true, message: { id: 2, error: { code: 'NOT_LEADER', message: 'no', leader: '127.0.0.1:7501', term: 4 } } });
  });

  it.each([
    [{ i: 1, o: 99 }, /op: unknown operation 99/],
    [{ i: -1, o: 2, q: 'x', p: [] }, /id: expected a non-negative integer/],
    [{ i: 1, o: 1, s: [] }, /statements: expected 1\.\.1000 statements/],
    [{ i: 1, o: 1, s: [['SELECT 1']] }, /statements\[0\]: expected \[sql, params\]/],
    [{ i: 1, o: 2, q: 'x', p: [], c: 'eventual' }, /consistency: expected local, leader or linearizable/],
    [{ i: 1, o: 5, n: 't', m: 'fast' }, /mode: expected local, async or sync/],
    [{ i: 1, o: 7, q: 'x', p: [] }, /tx: expected a transaction id/],
    [{ i: 1, o: 4, u: '', p: 'x' }, /user: expected a role name/],
  ])('refuses %j', (wire, reason) => {
    const result = decodeRequest(codec.pack(wire));
    expect(result.ok ? 'accepted' : result.error.message).toMatch(reason);
  });

  it('never throws on arbitrary bytes (fast-check)', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 100 }), (bytes) => {
      const result = decodeRequest(bytes);
      if (!result.ok) expect(result.error.code).toBe('RECORD_INVALID');
    }), { numRuns: 1000 });
  });
});
