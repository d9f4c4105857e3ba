// The failover drills that end a leader's sessions or its leadership, on a
// real 3-node cluster whose leaders prepare their sync writes (`--sync-hold
// prepare`; drill.test.ts runs every drill with the default, writes held
// open: docs/rfc/0027-held-open-writes.md): a killed sidecar leaves its
// prepared writes to its recovery and the next PROMOTE, a killed PostgreSQL
// keeps them, a paused or cut-off leader is deposed with writes prepared.
// Each must pass every checker, with writes in a newer term after the fault
// and every node ending with the same rows.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLocalCluster, type LocalCluster } from '../../src/cli/cluster.js';
import { summary } from '../../src/drill/report.js';
import { runDrill } from '../../src/drill/run.js';
import { localTarget } from '../../src/drill/target.js';

let cluster: LocalCluster;

beforeAll(async () => {
  cluster = await startLocalCluster({
    proxies: true, synchroTimeoutMs: 3_000, sidecarArgs: () => ['--sync-hold', 'prepare'],
    ...(process.env.QSYNC_E2E_DIR === undefined ? {} : { dir: `${process.env.QSYNC_E2E_DIR}/prepared-drills` }),
  });
}, 120_000);

afterAll(async () => {
  await cluster?.stop();
});

describe('failover drills with sync writes prepared', () => {
  it.each([['kill-leader', 21], ['kill-postgres', 22], ['pause-leader', 23], ['partition-leader', 24]] as const)('%s passes every checker', async (scenario, seed) => {
    const result = await runDrill(localTarget(cluster), { scenario, durationMs: 6_000, rate: 60, clients: 6, seed, repetitions: 1, faultMs: 2_500 });
    const text = summary(result);
    expect(result.checks.filter((c) => c.valid !== true), text).toEqual([]);
    expect(result.valid, text).toBe(true);
    expect(result.ops.filter((o) => o.result === 'ok').length, text).toBeGreaterThan(20);
    expect(result.faults, text).toHaveLength(1);
    const [fault] = result.faults;
    expect(fault?.newTerm ?? 0, text).toBeGreaterThan(fault?.termBefore ?? 0);
    expect(result.convergedMs, text).not.toBeNull();
  }, 120_000);
});
