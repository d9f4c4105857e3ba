// Proves that a node's own records reach the journal in lsn order however
// their transactions finish, that an lsn given back while it is the latest is
// reused, and that one abandoned behind later lsns is filled with an empty TXN
// (the journal never has a gap and never waits forever).
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { JournalRecord } from '../../src/core/record.js';
import type { Lsn, ReplicaId, Term } from '../../src/core/types.js';
import { Journal } from '../../src/journal/index.js';
import { OwnLog } from '../../src/sidecar/own-log.js';
import { readAll, tempDir, txn } from '../support/journal.js';

let journal: Journal;
let cleanup: () => Promise<void>;
let appended: number[];
let own: OwnLog;
beforeEach(async () => {
  const temp = await tempDir();
  cleanup = temp.cleanup;
  journal = await Journal.open({ dir: temp.dir });
  appended = [];
  own = new OwnLog(journal, 1 as ReplicaId, 'c', (record) => appended.push(record.lsn));
});
afterEach(async () => {
  await journal.close();
  await cleanup();
});

const record = (lsn: Lsn): JournalRecord => txn(1, lsn);

describe('own records in lsn order', () => {
  it('appends in lsn order whatever order the transactions finish in', async () => {
    const [a, b, c] = [own.reserve(), own.reserve(), own.reserve()];
    const done = [own.submit(record(c.lsn)), own.submit(record(a.lsn))];
    expect(appended).toEqual([1]); // 3 waits for 2
    done.push(own.submit(record(b.lsn)));
    await Promise.all(done);
    expect(appended).toEqual([1, 2, 3]);
    expect((await readAll(journal)).map((r) => r.lsn)).toEqual([1, 2, 3]);
  });

  it('reuses an lsn given back while it is the latest', async () => {
    const a = own.reserve();
    own.release(a.lsn, 1 as Term, 0);
    expect(own.reserve().lsn).toBe(a.lsn);
  });

  it('fills an lsn abandoned behind later ones with an empty TXN', async () => {
    const a = own.reserve();
    const b = own.reserve();
    const later = own.submit(record(b.lsn));
    own.release(a.lsn, 1 as Term, 0);
    await later;
    const records = await readAll(journal);
    expect(records.map((r) => [r.lsn, r.kind === 'txn' ? r.changes.length : -1])).toEqual([[1, 0], [2, 1]]);
    expect(records[0]).toMatchObject({ kind: 'txn', sync: false, changes: [], gid: 'qsync:c:1:1' });
  });
});
