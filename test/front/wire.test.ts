// The SQL front's framing (front/wire.ts): whatever way a stream of messages
// is cut into chunks, the same messages come out, in order; a declared
// length out of bounds fails before its body is kept; and a large message
// that arrives in many small chunks is whole once, not copied per chunk.
// The writer that relays them sends what it was given in order, and
// messages that lie together in what was received as one write.
import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import { batchedWriter, Frames, message, type Message, WireError } from '../../src/front/wire.js';

const typed = fc.tuple(fc.constantFrom('Q', 'P', 'B', 'E', 'S', 'd'), fc.uint8Array({ maxLength: 300 })).map(([type, body]) => message(type, Buffer.from(body)));

describe('framing a client\'s messages', () => {
  it('gives back the messages sent, however the stream is cut (property)', () => {
    fc.assert(fc.property(fc.array(typed, { minLength: 1, maxLength: 20 }), fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 50 }), (messages, cuts) => {
      const stream = Buffer.concat(messages);
      const frames = new Frames('client');
      const out: Buffer[] = [];
      let at = 0;
      for (let i = 0; at < stream.length; i += 1) {
        const size = cuts[i % cuts.length] as number;
        frames.push(stream.subarray(at, at + size));
        at += size;
        for (let m = frames.message(1024); m !== null; m = frames.message(1024)) out.push(Buffer.from(m.raw));
      }
      expect(out).toEqual(messages);
      expect(frames.pending).toBe(0);
    }), { numRuns: 300 });
  });

  it('refuses a length out of bounds as soon as the header is in', () => {
    const frames = new Frames('client');
    frames.push(Buffer.from([0x51, 0x7f, 0xff, 0xff, 0xff]));
    expect(() => frames.message(16 * 1024 * 1024)).toThrow(WireError);
    const short = new Frames('client');
    short.push(Buffer.from([0x51, 0, 0, 0, 3]));
    expect(() => short.message(1024)).toThrow(/invalid client message length 3/);
    const startup = new Frames('client');
    startup.push(Buffer.from([0, 0, 0x4e, 0x30]));
    expect(() => startup.startup(10_000)).toThrow(/startup packet length 20016/);
  });

  it('joins a 4 MiB message sent in 4 KiB chunks once, at its end', () => {
    const big = message('d', Buffer.alloc(4 * 1024 * 1024, 7));
    const frames = new Frames('client');
    // Joining it per chunk was 1,024 copies of up to 4 MiB each (4 GiB copied for one message).
    const concat = vi.spyOn(Buffer, 'concat');
    try {
      for (let at = 0; at < big.length; at += 4096) {
        frames.push(big.subarray(at, at + 4096));
        if (at + 4096 < big.length) expect(frames.message(16 * 1024 * 1024)).toBeNull();
      }
      expect(concat.mock.calls.length).toBeLessThanOrEqual(2);
    } finally {
      concat.mockRestore();
    }
    const m = frames.message(16 * 1024 * 1024);
    expect(m?.raw.equals(big)).toBe(true);
  });
});

describe('relaying messages by their place', () => {
  /** A socket that records each write, corked or not. */
  function recorder(): { socket: Parameters<typeof batchedWriter>[0]; writes: Buffer[] } {
    const writes: Buffer[] = [];
    return { writes, socket: { cork: () => undefined, uncork: () => undefined, write: (b: Buffer) => writes.push(Buffer.from(b)) > 0, destroyed: false, writableNeedDrain: false } };
  }

  function messagesOf(stream: Buffer): Message[] {
    const frames = new Frames('PostgreSQL');
    frames.push(stream);
    const out: Message[] = [];
    for (let m = frames.message(1024); m !== null; m = frames.message(1024)) out.push(m);
    return out;
  }

  it('sends every byte in order, messages received together as one write, and its own between them (property)', () => {
    fc.assert(fc.property(fc.array(typed, { minLength: 1, maxLength: 12 }), fc.array(fc.constantFrom('span', 'skip', 'own'), { minLength: 12, maxLength: 12 }), (sent, plan) => {
      const received = messagesOf(Buffer.concat(sent));
      const { socket, writes } = recorder();
      const writer = batchedWriter(socket);
      const expected: Buffer[] = [];
      let expectedWrites = 0;
      let joined = false;
      received.forEach((m, i) => {
        const step = plan[i] as string;
        if (step === 'span') {
          writer.write(m);
          expected.push(m.raw);
          if (!joined) expectedWrites += 1;
          joined = true;
        } else if (step === 'own') {
          const own = message('N', Buffer.from(`own ${i}`));
          writer.write(own);
          expected.push(own);
          expectedWrites += 1;
          joined = false;
        } else {
          joined = false;
        }
      });
      writer.flush();
      expect(Buffer.concat(writes)).toEqual(Buffer.concat(expected));
      expect(writes.length).toBe(expectedWrites);
    }), { numRuns: 300 });
  });
});
