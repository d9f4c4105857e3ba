// Proves the journal's contract: records are durable and recovered in order,
// lsn order per replica is enforced at append, concurrent appends share one
// write + fdatasync, segments rotate and are removed without losing the
// latest vote, and bad calls get typed errors while the journal keeps working.
import { readdir } from 'node:fs/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RecordInvalid } from '../../src/core/errors.js';
import type { JournalRecord } from '../../src/core/record.js';
import { vclockCovers, vclockFromEntries } from '../../src/core/vclock.js';
import type { Lsn, ReplicaId, Term } from '../../src/core/types.js';
import { Journal } from '../../src/journal/index.js';
import { key, nextTxn, raft, readAll, tempDir, txn } from '../support/journal.js';

let dir: string;
let cleanup: () => Promise<void>;
beforeEach(async () => ({ dir, cleanup } = await tempDir()));
afterEach(async () => cleanup());

describe('journal', () => {
  it('recovers what it appended, with vclock and raft state', async () => {
    const journal = await Journal.open({ dir });
    const written: JournalRecord[] = [txn(1, 1), txn(2, 1), raft(1, 5, 2), txn(1, 2)];
    for (const record of written) await journal.append(record);
    await journal.close();

    const reopened = await Journal.open({ dir });
    expect(await readAll(reopened)).toEqual(written);
    expect(reopened.vclock).toEqual([1, 2, 1]);
    expect(reopened.raft).toEqual({ term: 5, vote: 2 });
    expect(reopened.recovery).toMatchObject({ records: 4, cuts: [] });
    await reopened.close();
  });

  it('resolves an append only once the journal holds it durably', async () => {
    const journal = await Journal.open({ dir });
    const records = Array.from({ length: 50 }, (_, i) => txn(1, i + 1));
    await Promise.all(records.map((r) => journal.append(r).then(() => {
      expect(vclockCovers(journal.vclock, vclockFromEntries([[r.replica, r.lsn]]))).toBe(true);
    })));
    await journal.close();
  });

  it('group-commits: appends made together share one write and one fdatasync', async () => {
    const journal = await Journal.open({ dir });
    const before = journal.stats();
    await Promise.all(Array.from({ length: 500 }, () => journal.append(nextTxn(journal, 1))));
    const after = journal.stats();
    expect([after.appends - before.appends, after.fsyncs - before.fsyncs, after.batches - before.batches]).toEqual([500, 1, 1]);
    await journal.close();
  });

  // RFC 0020: a CONFIRM alone does not take an fsync of its own while another record may share one.
  const confirm = (lsn: number, confirmedLsn: number): JournalRecord => ({ kind: 'confirm', replica: 1 as ReplicaId, lsn: lsn as Lsn, term: 1 as Term, time: lsn, owner: 1 as ReplicaId, confirmedLsn: confirmedLsn as Lsn });

  it('holds a CONFIRM alone until the next record, which shares its fsync', async () => {
    const journal = await Journal.open({ dir, confirmWaitMs: 60_000 });
    await journal.append(txn(1, 1));
    const before = journal.stats();
    let confirmed = false;
    const held = journal.append(confirm(2, 1)).then(() => (confirmed = true));
    await new Promise((r) => setTimeout(r, 100));
    expect([confirmed, journal.vclock, journal.tailVclock]).toEqual([false, [0, 1], [0, 2]]);
    await journal.append(txn(1, 3));
    await held;
    const after = journal.stats();
    expect([after.appends - before.appends, after.fsyncs - before.fsyncs, confirmed]).toEqual([2, 1, true]);
    await journal.close();
  });

  it('makes a CONFIRM alone durable after confirmWaitMs, and at once with confirmWaitMs 0', async () => {
    for (const confirmWaitMs of [20, 0]) {
      const journal = await Journal.open({ dir, confirmWaitMs });
      const lsn = (journal.tailVclock[1] ?? 0) + 1;
      await journal.append(confirm(lsn, lsn - 1));
      expect(journal.vclock[1]).toBe(lsn);
      await journal.close();
    }
  });

  it('makes a waiting CONFIRM durable when it closes', async () => {
    const journal = await Journal.open({ dir, confirmWaitMs: 60_000 });
    await journal.append(txn(1, 1));
    const held = journal.append(confirm(2, 1));
    await journal.close();
    await held;
    const reopened = await Journal.open({ dir });
    expect((await readAll(reopened)).map(key)).toEqual(['1:1', '1:2']);
    await reopened.close();
  });

  it('refuses an out-of-order lsn with a typed error and keeps working', async () => {
    const journal = await Journal.open({ dir });
    await journal.append(txn(1, 1));
    await expect(journal.append(txn(1, 3))).rejects.toMatchObject({ code: 'JOURNAL_LSN_ORDER', message: expect.stringMatching(/expects lsn 2 of replica 1/) });
    await expect(journal.append(txn(1, 1))).rejects.toMatchObject({ code: 'JOURNAL_LSN_ORDER' });
    await journal.append(txn(1, 2));
    expect((await readAll(journal)).map(key)).toEqual(['1:1', '1:2']);
    await journal.close();
  });

  it('refuses invalid and oversized records without consuming their lsn', async () => {
    const journal = await Journal.open({ dir });
    await expect(journal.append({ ...txn(1, 1), gid: '' })).rejects.toBeInstanceOf(RecordInvalid);
    await expect(journal.append(txn(1, 1, 17 * 1024 * 1024))).rejects.toMatchObject({ code: 'FRAME_TOO_LARGE' });
    await journal.append(txn(1, 1));
    expect(journal.vclock).toEqual([0, 1]);
    await journal.close();
  });

  it('keeps per-replica lsn order under concurrent appenders', async () => {
    const journal = await Journal.open({ dir });
    const worker = async (replica: number, count: number): Promise<void> => {
      for (let i = 0; i < count; i += 1) {
        const pending = journal.append(nextTxn(journal, replica));
        if (i % 3 === 0) await pending; // some workers wait, some pipeline
        else void pending.catch(() => undefined);
        if (i % 7 === 0) await new Promise((r) => setImmediate(r));
      }
    };
    await Promise.all([1, 2, 3, 1, 2, 3, 4].map((replica) => worker(replica, 200)));
    await journal.close();
    const reopened = await Journal.open({ dir });
    const last = new Map<number, number>();
    for (const record of await readAll(reopened)) {
      expect(record.lsn).toBe((last.get(record.replica) ?? 0) + 1);
      last.set(record.replica, record.lsn);
    }
    expect([...last.entries()].sort()).toEqual([[1, 400], [2, 400], [3, 400], [4, 200]]);
    await reopened.close();
  });

  it('rotates segments by size and reads across them after reopen', async () => {
    const journal = await Journal.open({ dir, segmentBytesMax: 1024 });
    for (let i = 0; i < 60; i += 1) await journal.append(nextTxn(journal, 1 + (i % 2), 50));
    await journal.close();
    const segments = (await readdir(dir)).filter((n) => n.endsWith('.qsj'));
    expect(segments.length).toBeGreaterThan(3);
    const reopened = await Journal.open({ dir, segmentBytesMax: 1024 });
    expect((await readAll(reopened)).length).toBe(60);
    expect(reopened.recovery.segments).toBe(segments.length);
    await reopened.close();
  });

  it('removes covered segments but keeps the active one and the latest vote', async () => {
    const journal = await Journal.open({ dir, segmentBytesMax: 512 });
    await journal.append(raft(1, 7, 3));
    for (let i = 0; i < 40; i += 1) await journal.append(nextTxn(journal, 1, 50));
    const removed = await journal.removeBelow(vclockFromEntries([[1 as ReplicaId, 30 as Lsn]]));
    expect(removed.length).toBeGreaterThan(0);
    expect(() => journal.cursor([])).toThrow(expect.objectContaining({ code: 'JOURNAL_GAP' }));
    expect(await journal.removeBelow(journal.vclock)).not.toContain((await readdir(dir)).filter((n) => n.endsWith('.qsj')).at(-1));
    expect((await readdir(dir)).filter((n) => n.endsWith('.qsj')).length).toBe(1);
    await journal.close();

    const reopened = await Journal.open({ dir, segmentBytesMax: 512 });
    expect(reopened.raft).toEqual({ term: 7, vote: 3 });
    expect(reopened.vclock).toEqual([1, 40]);
    await reopened.append(nextTxn(reopened, 1));
    await reopened.close();
  });

  it('refuses a second process on the same directory and a closed journal', async () => {
    const journal = await Journal.open({ dir });
    await expect(Journal.open({ dir })).rejects.toMatchObject({ code: 'JOURNAL_LOCKED', message: expect.stringMatching(/in use by process/) });
    await journal.close();
    await expect(journal.append(txn(1, 1))).rejects.toMatchObject({ code: 'JOURNAL_CLOSED' });
    const again = await Journal.open({ dir });
    await again.close();
  });
});
