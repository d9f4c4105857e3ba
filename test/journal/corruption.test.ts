// Tries to break recovery: every single-byte flip and every truncation of a
// small journal must recover to a clean prefix of what was written (never a
// damaged record, never a crash), report the cut, and accept appends again.
// Damage that a crash cannot cause (an older segment, an intact frame with
// wrong content) must be refused with the file and offset named.
import { cp, readdir, readFile, truncate, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { codec, encodeRecord, type JournalRecord } from '../../src/core/record.js';
import { encodeFrame } from '../../src/journal/frame.js';
import { Journal } from '../../src/journal/index.js';
import { key, nextTxn, raft, readAll, tempDir, txn } from '../support/journal.js';

let root: string;
let cleanup: () => Promise<void>;
let written: JournalRecord[];
let segmentFile: string;
let pristine: Buffer;
let runs = 0;

beforeAll(async () => {
  ({ dir: root, cleanup } = await tempDir());
  const dir = join(root, 'pristine');
  const journal = await Journal.open({ dir });
  written = [txn(1, 1, 4), raft(1, 2, 1), txn(2, 1, 4), txn(1, 2, 4), txn(2, 2, 4), txn(1, 3, 4)];
  for (const record of written) await journal.append(record);
  await journal.close();
  const names = (await readdir(dir)).filter((n) => n.endsWith('.qsj'));
  expect(names.length).toBe(1);
  segmentFile = names[0] as string;
  pristine = await readFile(join(dir, segmentFile));
});
afterAll(async () => cleanup());

/** Write `bytes` as the only segment of a fresh journal dir, recover it, check the invariants. */
async function recoverFrom(bytes: Buffer): Promise<{ keys: string[]; cut: boolean }> {
  const dir = join(root, `case-${(runs += 1)}`);
  await cp(join(root, 'pristine'), dir, { recursive: true });
  await writeFile(join(dir, segmentFile), bytes);
  const journal = await Journal.open({ dir });
  const recovered = await readAll(journal);
  // A prefix of what was written, record for record.
  expect(recovered).toEqual(written.slice(0, recovered.length));
  // It accepts appends again, and the result reopens without any cut.
  await journal.append(nextTxn(journal, 3));
  const cut = journal.recovery.cuts.length > 0;
  await journal.close();
  const again = await Journal.open({ dir });
  expect(again.recovery.cuts).toEqual([]);
  expect((await readAll(again)).length).toBe(recovered.length + 1);
  await again.close();
  return { keys: recovered.map(key), cut };
}

describe('journal recovery under damage', () => {
  it('recovers a clean prefix after a flip of any byte', async () => {
    for (let at = 0; at < pristine.length; at += 1) {
      for (const mask of [0x01, 0xff]) {
        const damaged = Buffer.from(pristine);
        damaged[at] = (damaged[at] ?? 0) ^ mask;
        const { keys, cut } = await recoverFrom(damaged);
        expect(cut).toBe(true);
        expect(keys.length).toBeLessThan(written.length);
      }
    }
  });

  it('recovers exactly the whole records before any truncation point', async () => {
    const frameEnds: number[] = [];
    let end = encodeFrameLength(pristine, 0);
    const headerEnd = end;
    while (end < pristine.length) frameEnds.push((end += encodeFrameLength(pristine, end)));
    for (let length = 0; length < pristine.length; length += 1) {
      const { keys, cut } = await recoverFrom(pristine.subarray(0, length));
      const whole = length < headerEnd ? 0 : frameEnds.filter((e) => e <= length).length;
      expect(keys.length).toBe(whole);
      expect(cut).toBe(length !== headerEnd && !frameEnds.includes(length));
    }
  });

  it('reports what it cut: segment, offset, bytes and reason', async () => {
    const dir = join(root, 'report');
    await cp(join(root, 'pristine'), dir, { recursive: true });
    await truncate(join(dir, segmentFile), pristine.length - 3);
    const journal = await Journal.open({ dir });
    expect(journal.recovery.cuts).toEqual([
      { segment: segmentFile, offset: expect.any(Number), bytes: expect.any(Number), reason: expect.stringMatching(/^torn frame/), removedSegments: [] },
    ]);
    const [cut] = journal.recovery.cuts;
    expect((cut?.offset ?? 0) + (cut?.bytes ?? 0)).toBe(pristine.length - 3);
    await journal.close();
  });

  it('refuses an intact frame whose record does not follow, even in the last segment', async () => {
    const gap = encodeFrame(encodeRecord(txn(1, 9)));
    await expect(recoverFrom(Buffer.concat([pristine, gap]))).rejects.toMatchObject({
      code: 'JOURNAL_CORRUPT', message: expect.stringMatching(/record 1:9 does not follow 1:3.*not a torn write/),
    });
    const unknownKind = encodeFrame(codec.pack({ k: 42, r: 1, l: 4, t: 1, ts: 0 }));
    await expect(recoverFrom(Buffer.concat([pristine, unknownKind]))).rejects.toMatchObject({ message: expect.stringMatching(/unknown record kind 42/) });
  });
});

/** A closed journal of 30 records over several small segments; returns the segment names in order. */
async function segmentedJournal(dir: string): Promise<string[]> {
  const journal = await Journal.open({ dir, segmentBytesMax: 300 });
  for (let i = 0; i < 30; i += 1) await journal.append(nextTxn(journal, 1, 20));
  await journal.close();
  const names = (await readdir(dir)).filter((n) => n.endsWith('.qsj')).sort();
  expect(names.length).toBeGreaterThan(2);
  return names;
}

describe('damage in an older segment', () => {
  it('is refused with file and offset, and cut with every later segment under repair', async () => {
    const dir = join(root, 'multi');
    const names = await segmentedJournal(dir);
    const victim = join(dir, names[1] as string);
    const bytes = await readFile(victim);
    bytes[bytes.length - 5] = (bytes[bytes.length - 5] ?? 0) ^ 0x40;
    await writeFile(victim, bytes);

    await expect(Journal.open({ dir })).rejects.toMatchObject({
      code: 'JOURNAL_CORRUPT', message: expect.stringMatching(new RegExp(`${names[1]} is corrupt at byte \\d+: checksum mismatch. It is not the last segment`)),
    });
    const repaired = await Journal.open({ dir, repair: true });
    expect(repaired.recovery.cuts).toMatchObject([{ segment: names[1], removedSegments: names.slice(2) }]);
    const keys = (await readAll(repaired)).map(key);
    expect(keys).toEqual(Array.from({ length: keys.length }, (_, i) => `1:${i + 1}`));
    expect(keys.length).toBeLessThan(30);
    await repaired.close();
  });

  it('refuses a missing middle segment', async () => {
    const dir = join(root, 'missing');
    const names = await segmentedJournal(dir);
    await writeFile(join(dir, names[1] as string), '');
    await expect(Journal.open({ dir })).rejects.toMatchObject({ code: 'JOURNAL_CORRUPT', message: expect.stringMatching(/torn segment header. It is not the last segment/) });
    await unlink(join(dir, names[1] as string));
    await expect(Journal.open({ dir })).rejects.toMatchObject({ code: 'JOURNAL_CORRUPT', message: expect.stringMatching(/a segment is missing or was altered/) });
  });
});

function encodeFrameLength(buffer: Buffer, offset: number): number {
  return 8 + buffer.readUInt32BE(offset);
}
