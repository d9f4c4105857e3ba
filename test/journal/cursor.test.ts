// Proves that a cursor opened at any vclock returns exactly the records a
// full read returns after filtering by that vclock, across segments, and that
// a following cursor sees live appends (and rotations) in order.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import type { JournalRecord } from '../../src/core/record.js';
import type { Lsn, ReplicaId } from '../../src/core/types.js';
import { vclockFollow, vclockGet, VCLOCK_EMPTY, type VClock } from '../../src/core/vclock.js';
import { Journal } from '../../src/journal/index.js';
import { key, nextTxn, raft, readAll, tempDir } from '../support/journal.js';

async function collect(journal: Journal, from: VClock, includeLocal: boolean): Promise<string[]> {
  const keys: string[] = [];
  for await (const record of journal.cursor(from, { includeLocal })) keys.push(key(record));
  return keys;
}

function expected(all: JournalRecord[], from: VClock, includeLocal: boolean): string[] {
  return all.filter((r) => (includeLocal || r.replica !== 0) && r.lsn > vclockGet(from, r.replica)).map(key);
}

describe('journal cursor', () => {
  let journal: Journal;
  let all: JournalRecord[];
  let reached: VClock[];
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    const temp = await tempDir();
    cleanup = temp.cleanup;
    journal = await Journal.open({ dir: temp.dir, segmentBytesMax: 600 });
    reached = [VCLOCK_EMPTY];
    let local = 0;
    for (let i = 0; i < 90; i += 1) {
      const record = i % 11 === 5 ? raft((local += 1), i, 1) : nextTxn(journal, 1 + (i % 3), 20);
      await journal.append(record);
      reached.push(journal.vclock);
    }
    all = await readAll(journal);
    expect(all.length).toBe(90);
  });
  afterAll(async () => {
    await journal.close();
    await cleanup();
  });

  it('from every vclock the journal passed through equals the filtered full read', async () => {
    for (const from of reached) {
      for (const includeLocal of [false, true]) expect(await collect(journal, from, includeLocal)).toEqual(expected(all, from, includeLocal));
    }
  });

  it('from arbitrary (concurrent) vclocks equals the filtered full read (fast-check)', async () => {
    const final = journal.vclock;
    const fromArb = fc.tuple(...[0, 1, 2, 3].map((r) => fc.integer({ min: 0, max: vclockGet(final, r as ReplicaId) })));
    await fc.assert(fc.asyncProperty(fromArb, fc.boolean(), async (lsns, includeLocal) => {
      let from: VClock = VCLOCK_EMPTY;
      lsns.forEach((lsn, r) => {
        if (lsn > 0) from = vclockFollow(from, r as ReplicaId, lsn as Lsn);
      });
      expect(await collect(journal, from, includeLocal)).toEqual(expected(all, from, includeLocal));
    }), { numRuns: 60 });
  });
});

describe('following cursor', () => {
  it('sees live appends in order across rotations, then ends when the journal closes', async () => {
    const { dir, cleanup } = await tempDir();
    onTestFinished(cleanup);
    const journal = await Journal.open({ dir, segmentBytesMax: 400 });
    await journal.append(nextTxn(journal, 1));
    const cursor = journal.cursor(VCLOCK_EMPTY, { follow: true });
    const seen: string[] = [];
    const reading = (async () => {
      for await (const record of cursor) seen.push(key(record));
    })();
    for (let i = 0; i < 40; i += 1) {
      await journal.append(nextTxn(journal, 1 + (i % 2), 30));
      if (i % 5 === 0) await new Promise((r) => setTimeout(r, 1));
    }
    await journal.close();
    await reading;
    expect(seen.length).toBe(41);
    expect(seen.filter((k) => k.startsWith('1:'))).toEqual(Array.from({ length: 21 }, (_, i) => `1:${i + 1}`));
  });
});

describe('cursor at the tail (RFC 0022)', () => {
  it('takes the last batches from memory as they were written, older ones and a reopened journal from the file, in the same order', async () => {
    const { dir, cleanup } = await tempDir();
    onTestFinished(cleanup);
    let journal = await Journal.open({ dir, segmentBytesMax: 1024 * 1024 });
    // 32 KiB payloads: the first batches fall out of the 1 MiB kept in memory, and rotations cross segments.
    const appended: JournalRecord[] = [];
    for (let i = 0; i < 80; i += 1) {
      const record = nextTxn(journal, 1 + (i % 2), 32 * 1024);
      appended.push(record);
      await journal.append(record);
    }
    const live = await readAll(journal);
    expect(live.map(key)).toEqual(appended.map(key));
    const fromMemory = live.filter((record, i) => record === appended[i]).length;
    // The newest batches are the very objects appended; the oldest were read back from the file.
    expect(live.at(-1)).toBe(appended.at(-1));
    expect(live[0]).not.toBe(appended[0]);
    expect(live[0]).toEqual(appended[0]);
    expect(fromMemory).toBeGreaterThan(10);
    expect(fromMemory).toBeLessThan(80);
    await journal.close();
    journal = await Journal.open({ dir });
    onTestFinished(() => journal.close());
    const reread = await readAll(journal);
    expect(reread).toEqual(appended);
    expect(reread.some((record, i) => record === appended[i])).toBe(false);
  });
});
