// fast-check arbitraries for qsync's core values, shared by the property tests.
import fc from 'fast-check';
import type { Change, JournalRecord } from '../../src/core/record.js';
import type { Lsn, ReplicaId, Term } from '../../src/core/types.js';
import { vclockFromEntries, type VClock } from '../../src/core/vclock.js';

export const replicaArb = fc.integer({ min: 1, max: 31 }).map((n) => n as ReplicaId);
export const lsnArb = fc.integer({ min: 1, max: 2 ** 40 }).map((n) => n as Lsn);
export const termArb = fc.integer({ min: 0, max: 2 ** 40 }).map((n) => n as Term);

/** Small components so that equal and ordered pairs come up often. */
export const vclockArb: fc.Arbitrary<VClock> = fc
  .array(fc.tuple(fc.integer({ min: 0, max: 6 }), fc.integer({ min: 0, max: 4 })), { maxLength: 8 })
  .map((entries) => vclockFromEntries(entries.map(([r, l]) => [r as ReplicaId, l as Lsn])));

const cellArb = fc.oneof(
  fc.string(),
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.integer(), { maxLength: 3 }),
  fc.dictionary(fc.string({ minLength: 1, maxLength: 4 }), fc.string(), { maxKeys: 3 }),
);
const rowsArb: fc.Arbitrary<string> = fc.array(fc.dictionary(fc.string({ minLength: 1, maxLength: 8 }), cellArb, { maxKeys: 5 }), { maxLength: 4 }).map((rows) => JSON.stringify(rows));
const tableArb = fc.string({ minLength: 1, maxLength: 20 });

const changeArb: fc.Arbitrary<Change> = fc.oneof(
  fc.record({ table: tableArb, op: fc.constantFrom('insert' as const, 'delete' as const), rows: rowsArb }),
  fc.record({ table: tableArb, op: fc.constant('update' as const), rows: rowsArb, oldKeys: rowsArb }),
  fc.record({ table: tableArb, op: fc.constant('copy' as const), rows: fc.string({ maxLength: 60 }), columns: fc.array(fc.string({ minLength: 1, maxLength: 10 }), { minLength: 1, maxLength: 3 }) }),
);

const headerArb = fc.record({ replica: replicaArb, lsn: lsnArb, term: termArb, time: fc.integer({ min: 0, max: 2 ** 52 }) });

export const recordArb: fc.Arbitrary<JournalRecord> = fc.oneof(
  fc.record({
    h: headerArb,
    gid: fc.stringMatching(/^[A-Za-z0-9:._-]{1,60}$/),
    sync: fc.boolean(),
    changes: fc.array(changeArb, { maxLength: 4 }),
    idempotencyKey: fc.option(fc.string({ minLength: 1, maxLength: 40 }), { nil: null }),
  }).map(({ h, ...p }) => ({ ...h, kind: 'txn' as const, ...p })),
  fc.record({ h: headerArb, owner: replicaArb, confirmedLsn: lsnArb }).map(({ h, ...p }) => ({ ...h, kind: 'confirm' as const, ...p })),
  fc.record({ h: headerArb, owner: replicaArb, fromLsn: lsnArb, withheldFromLsn: lsnArb }, { requiredKeys: ['h', 'owner', 'fromLsn'] }).map(({ h, ...p }) => ({ ...h, kind: 'rollback' as const, ...p })),
  fc.record({ h: headerArb, prevOwner: fc.integer({ min: 0, max: 31 }).map((n) => n as ReplicaId), prevLsn: lsnArb, leader: replicaArb }).map(({ h, ...p }) => ({ ...h, kind: 'promote' as const, ...p })),
  fc.record({ h: headerArb, confirmedLsn: lsnArb }).map(({ h, ...p }) => ({ ...h, kind: 'demote' as const, ...p })),
  fc.record(
    {
      h: headerArb,
      tables: fc.dictionary(tableArb.filter((k) => k !== '__proto__'), fc.constantFrom('local' as const, 'async' as const, 'sync' as const), { maxKeys: 3 }),
      shapes: fc.dictionary(tableArb.filter((k) => k !== '__proto__'), fc.record({
        columns: fc.array(fc.tuple(fc.string({ minLength: 1, maxLength: 20 }), fc.constantFrom('bigint', 'text', 'numeric(10,2)')), { maxLength: 4 }),
        key: fc.array(fc.string({ minLength: 1, maxLength: 20 }), { minLength: 1, maxLength: 2 }),
      }), { maxKeys: 2 }),
      ddl: fc.string({ minLength: 1, maxLength: 40 }),
      ddlRole: fc.string({ minLength: 1, maxLength: 63 }),
      membership: fc.uniqueArray(fc.record({ replica: replicaArb, address: fc.constant('127.0.0.1:7401'), client: fc.option(fc.constant('127.0.0.1:7501'), { nil: undefined }) }), { minLength: 1, maxLength: 5, selector: (m) => m.replica })
        .chain((members) => fc.record({ members: fc.constant(members.map(({ client, ...m }) => (client === undefined ? m : { ...m, client }))), quorum: fc.integer({ min: 1, max: members.length }), membersVersion: fc.integer({ min: 1, max: 1_000 }) })),
      synchroTimeoutMs: fc.integer({ min: 1, max: 60_000 }),
      electionTimeoutMs: fc.integer({ min: 1, max: 60_000 }),
    },
    { requiredKeys: ['h'] },
  ).map(({ h, membership, ...p }) => ({ ...h, kind: 'config' as const, ...p, ...membership })),
  fc.record({ h: headerArb, vote: fc.integer({ min: 0, max: 31 }).map((n) => n as ReplicaId) }).map(({ h, vote }) => ({ ...h, replica: 0 as ReplicaId, kind: 'raft' as const, vote })),
);
