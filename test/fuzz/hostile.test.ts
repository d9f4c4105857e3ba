// A small run of the hostile-input attack (hostile.ts) on a real cluster, in
// every npm test: a stranger and a peer or client gone bad cannot stop, swell
// or fork a node (issue 19). The large run is `npm run fuzz`.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startLocalCluster, type LocalCluster } from '../../src/cli/cluster.js';
import { connect } from '../../src/client/index.js';
import { attack, type HostileReport } from './hostile.js';

let cluster: LocalCluster;
let report: HostileReport;

beforeAll(async () => {
  cluster = await startLocalCluster({
    // Above the default: on 2 shared cores the attack itself must not starve heartbeats into an election.
    electionTimeoutMs: 3_000,
    tables: [{ ddl: 'CREATE TABLE fuzzed (id bigint PRIMARY KEY, note text)', name: 'fuzzed', mode: 'sync' }],
  });
  report = await attack(cluster, { seed: 19, inputs: 150, idle: 150, idleHoldMs: 1_500, logins: 60, table: 'fuzzed' });
}, 240_000);

afterAll(async () => cluster?.stop());

it('sent every kind of input to every port', () => {
  expect(report.harnessFaults).toEqual([]);
  for (const port of ['peer', 'client', 'admin'] as const) expect(report.inputs[port].sent).toBe(150);
  for (const kind of ['oversized', 'bigint', 'deep', 'declared', 'flood']) expect(report.inputs.peer.byKind[kind] ?? 0, kind).toBeGreaterThan(0);
  for (const kind of ['hello-wrong-proof', 'hello-replayed', 'hello-foreign-cluster']) expect(report.inputs.peer.byKind[kind] ?? 0, kind).toBeGreaterThan(0);
  expect(Object.keys(report.inputs.peer.byKind).some((k) => k.startsWith('after-handshake-'))).toBe(true);
  for (const kind of ['auth-wrong', 'request-before-auth', 'after-login']) expect(report.inputs.client.byKind[kind] ?? 0, kind).toBeGreaterThan(0);
});

it('no process died, and every node still answers', () => {
  expect(report.crashes).toEqual([]);
  for (const node of cluster.nodes) {
    expect(node.process).not.toBeNull();
    expect(node.process?.exitCode).toBeNull();
  }
  expect(report.after).toHaveLength(3);
});

it('role, term, leader and the vclock of every replica but the writer did not move', () => {
  expect(report.stateChanges).toEqual([]);
});

it('every sync write during the attack succeeded, and the tables are identical on every node', () => {
  expect(report.writes.errors).toEqual([]);
  expect(report.writes.ok).toBeGreaterThan(0);
  expect(report.tablesIdentical).toBe(true);
});

it('the admin port answered no request with a 500', () => {
  expect(report.http500).toEqual([]);
  expect(report.http['4xx'] ?? 0).toBeGreaterThan(0);
});

it('idle floods were cut by the caps, and a login flood left PostgreSQL able to take a legitimate client', async () => {
  expect(report.idle.peer.closedByServer).toBeGreaterThan(0);
  expect(report.idle.client.closedByServer).toBeGreaterThan(0);
  expect(report.idle.admin.closedByServer).toBeGreaterThan(0);
  expect(report.logins.refused + report.logins.closed + report.logins.other).toBe(60);
  expect(report.logins.other).toBe(0);
  const db = await connect(cluster.clientAddresses, cluster.credentials);
  try {
    expect(await db.query('SELECT count(*)::int AS n FROM fuzzed')).toMatchObject({ rows: [{ n: report.writes.ok }] });
  } finally {
    db.close();
  }
});

it('no sidecar held more than 150 MiB at its peak', () => {
  for (const [replica, mib] of Object.entries(report.rssPeakMiB)) expect(mib, `node ${replica}`).toBeLessThanOrEqual(150);
});
