// Every decoder of input from a peer, a client or the journal answers any
// input with a value or its own RecordInvalid, never anything thrown: msgpack
// values of every type (64-bit integers past the safe range, dates, binary,
// extension types, deep nesting), wrong shapes around every valid message
// code, and raw bytes with huge declared lengths. One 20-byte frame whose
// message code was a 64-bit integer used to throw a TypeError out of the
// decoder and stop the sidecar (issue 19, finding 1).
import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { decodeRequest, decodeResponse } from '../../src/core/client-protocol.js';
import { RecordInvalid } from '../../src/core/errors.js';
import { decodeMessage } from '../../src/core/messages.js';
import { decodeRecord } from '../../src/core/record.js';

const DECODERS = { decodeMessage, decodeRequest, decodeResponse, decodeRecord } as const;

/** Packs what the production codec never writes: BigInts as 64-bit integers. */
const hostile = new Packr({ useRecords: false, variableMapSize: true, useBigIntExtension: false });

/** The keys and codes the decoders look at, so that shapes come near every valid message. */
const KEYS = ['m', 'i', 'o', 'x', 'v', 'c', 'r', 'n', 'p', 's', 't', 'k', 'l', 'y', 'vc', 'e', 'g', 'j', 'f', 'h', 'cl', 'u', 'q', 'ts', 'tb', 'ch', 'gi', 'sy', '__proto__', 'constructor'];

const leaf = fc.oneof(
  fc.constant(null), fc.boolean(), fc.integer({ min: -3, max: 12 }), fc.integer(), fc.double(),
  fc.bigInt({ min: -(2n ** 63n), max: 2n ** 64n - 1n }), fc.string({ maxLength: 40 }), fc.uint8Array({ maxLength: 40 }), fc.date({ noInvalidDate: true }),
);

const { value } = fc.letrec((tie) => ({
  value: fc.oneof({ depthSize: 'small', withCrossShrink: true }, leaf, tie('array'), tie('object')),
  array: fc.array(tie('value'), { maxLength: 5 }),
  object: fc.dictionary(fc.constantFrom(...KEYS), tie('value'), { maxKeys: 6 }),
}));

function neverThrows(bytes: Uint8Array): void {
  for (const [name, decode] of Object.entries(DECODERS)) {
    let result: { ok: boolean; error?: unknown };
    try {
      result = decode(bytes);
    } catch (error) {
      throw new Error(`${name} threw ${(error as Error).name}: ${(error as Error).message}`, { cause: error });
    }
    if (!result.ok) expect(result.error, name).toBeInstanceOf(RecordInvalid);
  }
}

describe('decoders of hostile input', () => {
  it('answer arbitrary msgpack values with a value or RecordInvalid (fast-check)', () => {
    fc.assert(fc.property(value, (v) => neverThrows(hostile.pack(v))), { numRuns: 3_000 });
  });

  it('answer every message code with wrong-shaped fields (fast-check)', () => {
    const shaped = fc.record({ m: fc.integer({ min: 0, max: 11 }), o: fc.integer({ min: 0, max: 11 }), i: fc.oneof(fc.nat(), fc.bigInt({ min: 2n ** 53n, max: 2n ** 64n - 1n })), k: fc.integer({ min: 0, max: 8 }), y: fc.integer({ min: 0, max: 6 }) }, { requiredKeys: [] });
    fc.assert(fc.property(shaped, fc.dictionary(fc.constantFrom(...KEYS), value, { maxKeys: 6 }), (codes, rest) => neverThrows(hostile.pack({ ...rest, ...codes }))), { numRuns: 3_000 });
  });

  it('answer arbitrary bytes, and bytes that declare huge lengths (fast-check)', () => {
    const huge = fc.constantFrom(0xc6, 0xc9, 0xdb, 0xdd, 0xdf).map((marker) => Buffer.from([marker, 0xff, 0xff, 0xff, 0xff, 0x01]));
    fc.assert(fc.property(fc.oneof(fc.uint8Array({ maxLength: 300 }), huge), (bytes) => neverThrows(bytes)), { numRuns: 3_000 });
  });

  it('answer the frame that stopped a sidecar: a message code past the safe integers', () => {
    // {m: 2^64-1} and {o: 2^63, i: 1}: the first stopped the peer port, the second the client port.
    const frames = [Buffer.from('81a16dcfffffffffffffffff', 'hex'), hostile.pack({ i: 1, o: 2n ** 63n })];
    for (const bytes of frames) {
      neverThrows(bytes);
      expect(decodeMessage(bytes).ok).toBe(false);
      expect(decodeRequest(bytes).ok).toBe(false);
    }
    const refusal = decodeMessage(frames[0] as Buffer);
    expect(refusal.ok ? '' : refusal.error.message).toMatch(/unknown message code/);
  });

  it('answer nesting a hundred thousand deep, and extension types of every code', () => {
    neverThrows(Buffer.concat([Buffer.alloc(100_000, 0x91), Buffer.from([0xc0])]));
    neverThrows(Buffer.concat([Buffer.alloc(100_000, 0x81), Buffer.from([0xa1, 0x6d, 0xc0])]));
    for (let type = 0; type < 256; type += 1) {
      for (const body of [Buffer.alloc(0), Buffer.from([0x01]), Buffer.from('ffffffffffffffff', 'hex'), Buffer.from('81a16d01', 'hex')]) {
        neverThrows(Buffer.concat([Buffer.from([0xc7, body.length, type]), body]));
        neverThrows(Buffer.concat([Buffer.from([0x81, 0xa1, 0x6d, 0xc7, body.length, type]), body]));
      }
    }
  });
});
