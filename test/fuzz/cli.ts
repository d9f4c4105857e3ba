// The large run of the hostile-input attack (hostile.ts) on a fresh local
// cluster, with its figures:
//
//   npm run fuzz                                   10,000 inputs per port kind, seed 1
//   npm run fuzz -- --inputs 2000 --seed 7 --json out.json
//
// Exits 1 when a process died, a state moved, a write failed, the tables
// differ, the admin port answered 500, or a sidecar's peak RSS passed 150 MiB.
import { writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { startLocalCluster } from '../../src/cli/cluster.js';
import { attack, type HostileReport } from './hostile.js';

const RSS_MIB_MAX = 150;

const { values } = parseArgs({
  options: {
    inputs: { type: 'string', default: '10000' }, seed: { type: 'string', default: '1' }, idle: { type: 'string', default: '500' },
    logins: { type: 'string', default: '300' }, swell: { type: 'string', default: '24' }, json: { type: 'string' }, concurrency: { type: 'string', default: '8' },
  },
});

function failures(report: HostileReport): string[] {
  const found: string[] = report.harnessFaults.map((f) => `the harness failed an input: ${f}`);
  if (report.crashes.length > 0) found.push(`processes died: ${report.crashes.join('; ')}`);
  if (report.stateChanges.length > 0) found.push(`state moved: ${report.stateChanges.join('; ')}`);
  if (report.writes.failed > 0 || report.writes.ok === 0) found.push(`sync writes: ${report.writes.ok} ok, ${report.writes.failed} failed (${report.writes.errors.join('; ')})`);
  if (!report.tablesIdentical) found.push('the tables differ between nodes');
  if (report.logins.tooManyClients > 0) found.push(`PostgreSQL ran out of connection slots for ${report.logins.tooManyClients} logins`);
  if (report.sqlLogins.other > 0) found.push(`${report.sqlLogins.other} wrong passwords on the SQL port were not refused`);
  if (report.http500.length > 0) found.push(`admin answered 500: ${report.http500.join('; ')}`);
  for (const [replica, mib] of Object.entries(report.rssPeakMiB)) if (mib > RSS_MIB_MAX) found.push(`node ${replica} peaked at ${mib.toFixed(1)} MiB`);
  return found;
}

const cluster = await startLocalCluster({
  electionTimeoutMs: 3_000,
  tables: [{ ddl: 'CREATE TABLE fuzzed (id bigint PRIMARY KEY, note text)', name: 'fuzzed', mode: 'sync' }],
});
let report: HostileReport;
try {
  report = await attack(cluster, {
    seed: Number(values.seed), inputs: Number(values.inputs), idle: Number(values.idle), idleHoldMs: 3_000, logins: Number(values.logins), swell: Number(values.swell),
    concurrency: Number(values.concurrency), table: 'fuzzed', progress: (line) => process.stderr.write(`${line}\n`),
  });
} finally {
  await cluster.stop();
}
if (values.json !== undefined) await writeFile(values.json, `${JSON.stringify(report, null, 1)}\n`);
const kinds = (byKind: Record<string, number>): string => Object.entries(byKind).sort(([a], [b]) => a.localeCompare(b)).map(([k, n]) => `${k} ${n}`).join(', ');
console.log(`seed ${report.seed}, ${(report.durationMs / 1000).toFixed(0)} s`);
for (const port of ['peer', 'client', 'admin', 'sql'] as const) console.log(`${port}: ${report.inputs[port].sent} inputs (${kinds(report.inputs[port].byKind)})`);
console.log(`admin answers: ${kinds(report.http)}; 500s: ${report.http500.length}`);
for (const port of ['peer', 'client', 'admin', 'sql'] as const) console.log(`idle flood on the leader's ${port} port: ${report.idle[port].opened} opened, ${report.idle[port].closedByServer} closed by the server`);
console.log(`login flood: ${report.logins.refused} refused with AUTH, ${report.logins.closed} closed unanswered, ${report.logins.other} other; PostgreSQL out of slots: ${report.logins.tooManyClients}`);
console.log(`SQL port login flood: ${report.sqlLogins.refused} refused with 28P01, ${report.sqlLogins.closed} closed at a cap, ${report.sqlLogins.other} other`);
console.log(`swell: of ${values.swell} connections each sending 4 MiB of an 8 MiB frame before authenticating, the server closed ${report.swelled.join(' (peer port) and ')} (client port)`);
console.log(`sync writes during the attack: ${report.writes.ok} ok, ${report.writes.failed} failed`);
console.log(`crashes: ${report.crashes.length}; state changes: ${report.stateChanges.length}; tables identical: ${report.tablesIdentical}`);
console.log(`peak RSS (MiB): ${Object.entries(report.rssPeakMiB).map(([r, m]) => `node ${r} ${m.toFixed(1)}`).join(', ')}`);
const found = failures(report);
for (const line of found) console.log(`FAIL: ${line}`);
process.exit(found.length === 0 ? 0 : 1);
