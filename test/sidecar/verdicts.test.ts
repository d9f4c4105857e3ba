// Proves what recovery decides from a real journal about limbo entries once
// elections are in play: a ROLLBACK in the history a PROMOTE keeps still
// stands; a ROLLBACK past the lsn kept is void; a node's own sync writes from
// after it was deposed are rolled back even when a later PROMOTE keeps a
// higher lsn of that node; and the limbo's owner and term are the last
// PROMOTE's.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { JournalRecord } from '../../src/core/record.js';
import type { Lsn, ReplicaId, Term } from '../../src/core/types.js';
import { Journal } from '../../src/journal/index.js';
import { readVerdicts } from '../../src/sidecar/verdicts.js';
import { tempDir, txn } from '../support/journal.js';

let journal: Journal;
let cleanup: () => Promise<void>;
beforeEach(async () => {
  const temp = await tempDir();
  cleanup = temp.cleanup;
  journal = await Journal.open({ dir: temp.dir });
});
afterEach(async () => {
  await journal.close();
  await cleanup();
});

const ME = 1 as ReplicaId;
const sync = (replica: number, lsn: number, term: number): JournalRecord => ({ ...txn(replica, lsn), sync: true, term: term as Term });
const promote = (replica: number, lsn: number, term: number, prevOwner: number, prevLsn: number): JournalRecord => ({
  kind: 'promote', replica: replica as ReplicaId, lsn: lsn as Lsn, term: term as Term, time: 0, prevOwner: prevOwner as ReplicaId, prevLsn: prevLsn as Lsn, leader: replica as ReplicaId,
});
const rollback = (replica: number, lsn: number, term: number, fromLsn: number): JournalRecord => ({
  kind: 'rollback', replica: replica as ReplicaId, lsn: lsn as Lsn, term: term as Term, time: 0, owner: replica as ReplicaId, fromLsn: fromLsn as Lsn,
});
const confirm = (replica: number, lsn: number, term: number, confirmedLsn: number): JournalRecord => ({
  kind: 'confirm', replica: replica as ReplicaId, lsn: lsn as Lsn, term: term as Term, time: 0, owner: replica as ReplicaId, confirmedLsn: confirmedLsn as Lsn,
});
const verdictOf = async (replica: number, lsn: number): Promise<string> => (await readVerdicts(journal, ME)).verdict({ replica: replica as ReplicaId, lsn: lsn as Lsn });

describe('journal verdicts under elections', () => {
  it('a re-elected leader\'s PROMOTE keeps its own ROLLBACK: the entry it covers stays rolled back', async () => {
    for (const r of [promote(1, 1, 1, 0, 0), sync(1, 2, 1), sync(1, 3, 1), rollback(1, 4, 1, 3), promote(1, 5, 2, 1, 4)]) await journal.append(r);
    expect(await verdictOf(1, 2)).toBe('confirmed');
    expect(await verdictOf(1, 3)).toBe('rolled-back');
  });

  it('a ROLLBACK past the lsn kept is void: the new leader held the entry and committed it', async () => {
    // Node 2 led and rolled back its entry 3 with ROLLBACK lsn 4; node 3's PROMOTE kept node 2's
    // records up to 3 only: the ROLLBACK never reached a quorum, and node 3 committed entry 3.
    for (const r of [promote(2, 1, 1, 0, 0), sync(2, 2, 1), sync(2, 3, 1), rollback(2, 4, 1, 3), promote(3, 1, 2, 2, 3)]) await journal.append(r);
    expect(await verdictOf(2, 3)).toBe('confirmed');
  });

  it('this node\'s sync writes after it was deposed are void, even under a later PROMOTE keeping a higher lsn', async () => {
    for (const r of [
      promote(1, 1, 1, 0, 0), sync(1, 2, 1),
      promote(2, 1, 2, 1, 2), // node 2 deposes node 1, keeping its lsn 2
      sync(1, 3, 1), // node 1's write that outlived its leadership
      promote(1, 4, 3, 2, 1), // node 1 leads again
      sync(1, 5, 3),
      promote(3, 1, 4, 1, 5), // node 3 keeps node 1's records up to 5
    ]) await journal.append(r);
    expect(await verdictOf(1, 2)).toBe('confirmed');
    expect(await verdictOf(1, 3)).toBe('rolled-back');
    expect(await verdictOf(1, 5)).toBe('confirmed');
    const verdicts = await readVerdicts(journal, ME);
    expect(verdicts.history.synchro).toEqual({ owner: 3, term: 4 });
    expect(verdicts.history.withheld).toEqual([{ from: 3, to: 3, reason: 'deposed' }, { from: 6, to: Number.MAX_SAFE_INTEGER, reason: 'deposed' }]);
  });

  it('an entry of a deposed leader that arrives after the PROMOTE is rolled back, until that node writes a PROMOTE itself (simulator seed 39)', async () => {
    for (const r of [
      promote(2, 1, 1, 0, 0), sync(2, 2, 1),
      promote(3, 1, 2, 2, 2), // node 3 deposes node 2, keeping its lsn 2
      sync(2, 3, 1), // node 2's write, relayed late: no PROMOTE will ever decide it
      promote(2, 4, 3, 3, 1), // node 2 leads again
      sync(2, 5, 3),
    ]) await journal.append(r);
    expect(await verdictOf(2, 3)).toBe('rolled-back');
    expect(await verdictOf(2, 5)).toBe('pending');
  });

  it('a PROMOTE that voids a ROLLBACK revives the entries it had rolled back (simulator seed 19)', async () => {
    for (const r of [promote(2, 1, 1, 0, 0), sync(2, 2, 1), sync(2, 3, 1), rollback(2, 4, 1, 2), promote(3, 1, 2, 2, 3)]) await journal.append(r);
    const verdicts = await readVerdicts(journal, ME);
    // Rolled back in PostgreSQL on the ROLLBACK, confirmed by the PROMOTE: applied again from the journal.
    expect(verdicts.revived).toEqual([{ owner: 2, from: 2, to: 3 }]);
    expect(await verdictOf(2, 2)).toBe('confirmed');
  });

  it('a stale entry is rolled back, and a later PROMOTE that keeps it revives it (simulator seed 301)', async () => {
    for (const r of [
      promote(2, 1, 5, 0, 0),
      promote(1, 1, 6, 2, 1), // node 1 deposes node 2 without its entry 2
      sync(2, 2, 5), // node 2's entry, arriving after a PROMOTE of a newer term: stale
      promote(3, 1, 7, 2, 2), // node 3 never saw node 1's PROMOTE and keeps node 2's entry 2
    ]) await journal.append(r);
    const verdicts = await readVerdicts(journal, ME);
    expect(verdicts.revived).toEqual([{ owner: 2, from: 2, to: 2 }]);
    expect(await verdictOf(2, 2)).toBe('confirmed');
  });

  it('a stale CONFIRM, ROLLBACK or PROMOTE is journaled but decides nothing; a stale entry no PROMOTE kept is rolled back', async () => {
    const records = [
      promote(2, 1, 1, 0, 0), sync(2, 2, 1),
      promote(3, 1, 3, 2, 2), // term 3: node 3 keeps node 2's entry 2
      promote(4, 1, 2, 2, 1), // term 2, never heard by node 3: stale, must not roll back node 2's entry 2
      sync(4, 2, 2), // stale and pending nowhere: rolled back
      confirm(4, 3, 2, 2), // stale: cannot confirm it
      rollback(3, 2, 1, 1), // stale (term 1 < 3): cannot roll back anything
      sync(3, 3, 3),
    ];
    for (const r of records) await journal.append(r);
    const { history } = await readVerdicts(journal, ME);
    expect(records.map((r) => history.ignored(r))).toEqual([false, false, false, true, false, true, true, false]);
    expect(history.synchro).toEqual({ owner: 3, term: 3 });
    expect(await verdictOf(2, 2)).toBe('confirmed');
    expect(await verdictOf(4, 2)).toBe('rolled-back');
    expect(await verdictOf(3, 3)).toBe('pending');
  });
});
