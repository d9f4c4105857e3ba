// Retention (RFC 0009): trim writes the checkpoint before it removes
// segments and keeps what a cursor still reads; rebase replaces the journal
// with one segment that starts further on, ends cursors on the old one, and
// carries appends made meanwhile over; a crash in the middle of either is
// finished at the next open, so the checkpoint and the first segment agree.
import { readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Lsn, ReplicaId } from '../../src/core/types.js';
import { vclockFromEntries } from '../../src/core/vclock.js';
import { Journal } from '../../src/journal/index.js';
import { CHECKPOINT_FILE, REBASE_FILE, writeCheckpoint } from '../../src/journal/checkpoint.js';
import { encodeSegmentHeader } from '../../src/journal/segment.js';
import type { JournalRecord } from '../../src/core/record.js';
import type { VClock } from '../../src/core/vclock.js';
import { key, nextTxn, raft, tempDir, txn } from '../support/journal.js';

let dir: string;
let cleanup: () => Promise<void>;
beforeEach(async () => ({ dir, cleanup } = await tempDir()));
afterEach(async () => cleanup());

async function readAll(journal: Journal, from: VClock): Promise<JournalRecord[]> {
  const records: JournalRecord[] = [];
  for await (const record of journal.cursor(from)) records.push(record);
  return records;
}

const segments = async (): Promise<string[]> => (await readdir(dir)).filter((n) => n.endsWith('.qsj')).sort();

async function filled(records: number): Promise<Journal> {
  const journal = await Journal.open({ dir, segmentBytesMax: 512 });
  await journal.append(raft(1, 4, 2));
  for (let i = 0; i < records; i += 1) await journal.append(nextTxn(journal, 1, 50));
  return journal;
}

describe('journal retention', () => {
  it('trims at a segment start: the checkpoint first, then the segments before it; a reopened journal starts there', async () => {
    const journal = await filled(40);
    const cut = journal.segmentStarts[1];
    if (cut === undefined) throw new Error('expected at least 2 segments after the first');
    const before = (await segments()).length;
    expect(await journal.trim(cut, { decided: 'state' })).toHaveLength(2);
    expect(await segments()).toHaveLength(before - 2);
    expect(journal.oldestVclock).toEqual(cut);
    expect(() => journal.cursor([])).toThrow(expect.objectContaining({ code: 'JOURNAL_GAP' }));
    await journal.close();

    const reopened = await Journal.open({ dir, segmentBytesMax: 512 });
    expect(reopened.checkpoint).toEqual({ vclock: cut, state: { decided: 'state' } });
    expect(reopened.raft).toEqual({ term: 4, vote: 2 });
    expect((await readAll(reopened, cut)).map(key)[0]).toBe(`1:${(cut[1] ?? 0) + 1}`);
    await reopened.close();
  });

  it('keeps the segments a cursor still reads', async () => {
    const journal = await filled(40);
    const reader = journal.cursor([]);
    await reader.next();
    expect(await journal.trim(journal.segmentStarts.at(-1) ?? [], {})).toEqual([]);
    await reader.return();
    expect((await journal.removeBelow(journal.checkpoint?.vclock ?? [])).length).toBeGreaterThan(0);
    await journal.close();
  });

  it('rebases: one segment from the new start with the records kept; old cursors end with JOURNAL_GAP; appends meanwhile go on after', async () => {
    const journal = await filled(10);
    for (let lsn = 1; lsn <= 3; lsn += 1) await journal.append(txn(3, lsn));
    const old = journal.cursor([]);
    const start = vclockFromEntries([[1 as ReplicaId, 500 as Lsn], [2 as ReplicaId, 70 as Lsn], [3 as ReplicaId, 1 as Lsn]]);
    const rebased = journal.rebase(start, [txn(3, 2), txn(3, 3)], { h: 'adopted' });
    const during = journal.append(raft(2, 5, 1));
    // Meanwhile no new cursor starts on the journal being replaced, and its start still reads.
    expect(() => journal.cursor([])).toThrow(expect.objectContaining({ code: 'JOURNAL_GAP' }));
    await new Promise((resolve) => setImmediate(resolve));
    expect(journal.oldestVclock).toBeDefined();
    await rebased;
    await during;
    await expect(old.next()).rejects.toMatchObject({ code: 'JOURNAL_GAP' });
    expect(journal.vclock).toEqual([2, 500, 70, 3]);
    expect(await segments()).toHaveLength(1);
    await journal.append(txn(1, 501));
    await journal.close();

    const reopened = await Journal.open({ dir });
    expect(reopened.vclock).toEqual([2, 501, 70, 3]);
    expect(reopened.raft).toEqual({ term: 5, vote: 1 });
    expect(reopened.checkpoint?.state).toEqual({ h: 'adopted' });
    expect((await readAll(reopened, reopened.oldestVclock)).map(key)).toEqual(['3:2', '3:3', '1:501']);
    await reopened.close();
  });

  it('finishes an interrupted rebase whose checkpoint was written, and drops one whose checkpoint was not', async () => {
    const journal = await filled(10);
    await journal.close();
    const start = vclockFromEntries([[1 as ReplicaId, 90 as Lsn]]);
    await writeFile(join(dir, REBASE_FILE), encodeSegmentHeader({ vclock: start, raft: { term: 4 as never, vote: 2 as never } }));
    // No checkpoint for it: the old journal stays, the new segment goes.
    let reopened = await Journal.open({ dir, segmentBytesMax: 512 });
    expect(reopened.vclock).toEqual([1, 10]);
    expect((await readdir(dir)).includes(REBASE_FILE)).toBe(false);
    await reopened.close();
    // Its checkpoint written: the new segment replaces the old ones.
    await writeFile(join(dir, REBASE_FILE), encodeSegmentHeader({ vclock: start, raft: { term: 4 as never, vote: 2 as never } }));
    await writeCheckpoint(dir, { vclock: start, state: 'x' });
    reopened = await Journal.open({ dir, segmentBytesMax: 512 });
    expect(reopened.vclock).toEqual([0, 90]);
    expect(reopened.raft).toEqual({ term: 4, vote: 2 });
    expect(await segments()).toHaveLength(1);
    await reopened.close();
  });

  it('finishes an interrupted trim: segments before the checkpoint go at open', async () => {
    const journal = await filled(40);
    const cut = journal.segmentStarts[1] ?? [];
    await journal.close();
    await writeCheckpoint(dir, { vclock: cut, state: 's' });
    const reopened = await Journal.open({ dir, segmentBytesMax: 512 });
    expect(reopened.oldestVclock).toEqual(cut);
    await reopened.close();
    await rm(join(dir, CHECKPOINT_FILE));
  });
});
