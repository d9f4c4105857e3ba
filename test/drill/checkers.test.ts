// The drill's checkers on hand-made histories and node images: each must
// fail on the history that breaks its guarantee.
import { describe, expect, it } from 'vitest';
import { checkAsync, checkBank, checkRegister, checkReplicas, checkSet, type NodeImage } from '../../src/drill/checkers.js';
import type { Op } from '../../src/drill/workload.js';

let id = 0;
const op = (o: Partial<Op> & Pick<Op, 'f' | 'result'>): Op => ({
  id: id++, client: 0, workload: o.f === 'insert-async' ? 'mixed' : o.f === 'transfer' || o.f === 'balance' ? 'bank' : o.f === 'insert' ? 'set' : 'register',
  key: 'k', value: null, output: null, invokeMs: 0, completeMs: 1, ...o,
});
const image = (replica: number, over: Partial<NodeImage> = {}): NodeImage => ({
  replica, setIds: [], asyncIds: [], bank: [0, 1, 2, 3, 4].map((i) => ({ id: `a${i}`, balance: 100 })), hashes: { 'public.t': 'h' }, prepared: [], ...over,
});

describe('set checker', () => {
  const history = [op({ f: 'insert', key: 'a', result: 'ok' }), op({ f: 'insert', key: 'b', result: 'fail' }), op({ f: 'insert', key: 'c', result: 'unknown' })];
  it('passes when every acknowledged insert is everywhere and no failed one anywhere; unknown ones may go either way', () => {
    expect(checkSet(history, [image(1, { setIds: ['a', 'c'] }), image(2, { setIds: ['a'] })]).valid).toBe(true);
  });
  it('fails on a lost acknowledged insert, naming the node', () => {
    expect(checkSet(history, [image(1, { setIds: ['a'] }), image(2, { setIds: [] })])).toMatchObject({ valid: false, summary: expect.stringContaining('node 2 lost 1 acknowledged inserts: a') });
  });
  it('fails on an insert whose client was told it failed', () => {
    expect(checkSet(history, [image(1, { setIds: ['a', 'b'] })])).toMatchObject({ valid: false, summary: expect.stringContaining('told they failed: b') });
  });
});

describe('bank checker', () => {
  it('passes on a constant total', () => {
    expect(checkBank([op({ f: 'balance', result: 'ok', output: 500 })], [image(1)]).valid).toBe(true);
  });
  it('fails on a read with another total, and on a node that lost money', () => {
    expect(checkBank([op({ f: 'balance', result: 'ok', output: 490 })], [image(1)]).valid).toBe(false);
    expect(checkBank([], [image(1, { bank: [{ id: 'a0', balance: 100 }] })]).valid).toBe(false);
  });
  it('fails on a negative balance even when the total holds', () => {
    const bank = [{ id: 'a0', balance: -10 }, { id: 'a1', balance: 110 }, ...[2, 3, 4].map((i) => ({ id: `a${i}`, balance: 100 }))];
    expect(checkBank([op({ f: 'balance', result: 'ok', output: -1 })], [image(1, { bank })])).toMatchObject({ valid: false, summary: expect.stringContaining('negative balances: a0=-10') });
  });
});

describe('async checker', () => {
  it('fails when a node misses an acknowledged async insert', () => {
    const history = [op({ f: 'insert-async', key: 'x', result: 'ok' })];
    expect(checkAsync(history, [image(1, { asyncIds: ['x'] }), image(2, { asyncIds: ['x'] })]).valid).toBe(true);
    expect(checkAsync(history, [image(1, { asyncIds: ['x'] }), image(2)])).toMatchObject({ valid: false, summary: expect.stringContaining('node 2 misses 1') });
  });
});

describe('replica comparison', () => {
  it('fails on a table that differs, and on a prepared transaction left behind', () => {
    expect(checkReplicas([image(1), image(2)]).valid).toBe(true);
    expect(checkReplicas([image(1), image(2, { hashes: { 'public.t': 'other' } })])).toMatchObject({ valid: false, summary: 'public.t differs between node 1 and node 2' });
    expect(checkReplicas([image(1), image(2, { prepared: ['qsync:local:1:9'] })])).toMatchObject({ valid: false, summary: expect.stringContaining('node 2 still holds prepared transactions: qsync:local:1:9') });
  });
});

describe('register checker over a drill history', () => {
  it('drops failed operations, keeps unknown ones open, and catches a stale read', () => {
    const history = [
      op({ f: 'write', key: 'r', value: 3, result: 'ok', invokeMs: 0, completeMs: 10 }),
      op({ f: 'write', key: 'r', value: 4, result: 'fail', invokeMs: 11, completeMs: 12 }), // certain: never happened
      op({ f: 'write', key: 'r', value: 2, result: 'unknown', invokeMs: 13, completeMs: null }),
      op({ f: 'read', key: 'r', result: 'ok', output: 3, invokeMs: 20, completeMs: 30 }),
    ];
    expect(checkRegister(history).valid).toBe(true);
    expect(checkRegister([...history, op({ f: 'read', key: 'r', result: 'ok', output: 4, invokeMs: 40, completeMs: 50 })])).toMatchObject({ valid: false, summary: expect.stringContaining('NOT linearizable on key r') });
  });
});
