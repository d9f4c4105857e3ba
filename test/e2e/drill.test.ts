// Every drill scenario on a real 3-node cluster (3 embedded PostgreSQL
// servers, 3 sidecar processes, a TCP proxy on every peer link), at a short
// duration: each must pass all its checkers, and its fault must be followed
// by successful writes (an election where the scenario forces one). The HTML
// report is opened in headless Chromium; `qsync drill` runs against `qsync
// cluster up` as a user runs it.
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLocalCluster, type LocalCluster } from '../../src/cli/cluster.js';
import { html, summary } from '../../src/drill/report.js';
import { runDrill, SCENARIOS, type DrillResult } from '../../src/drill/run.js';
import { localTarget } from '../../src/drill/target.js';
import { WORKLOADS } from '../../src/drill/workload.js';

const run = promisify(execFile);
let cluster: LocalCluster;
const results = new Map<string, DrillResult>();

beforeAll(async () => {
  cluster = await startLocalCluster({ proxies: true, synchroTimeoutMs: 3_000, ...(process.env.QSYNC_E2E_DIR === undefined ? {} : { dir: `${process.env.QSYNC_E2E_DIR}/drill` }) });
}, 120_000);

afterAll(async () => {
  await cluster?.stop();
});

/** Scenarios that must move leadership: the first write after the fault is in a newer term. */
const ELECTS = new Set(['kill-leader', 'kill-postgres', 'partition-leader', 'pause-leader', 'switchover', 'rolling-restart']);

describe('failover drills on a 3-node cluster', () => {
  it.each(SCENARIOS.map((s, i) => [s, i + 1] as const))('%s passes every checker', async (scenario, seed) => {
    const result = await runDrill(localTarget(cluster), { scenario, durationMs: 6_000, rate: 60, clients: 6, seed, repetitions: 1, faultMs: 2_500 });
    results.set(scenario, result);
    const text = summary(result);
    expect(result.checks.filter((c) => c.valid !== true), text).toEqual([]);
    expect(result.valid, text).toBe(true);
    // Something ran: every workload acknowledged operations, and the fault happened.
    for (const workload of WORKLOADS) expect(result.ops.filter((o) => o.workload === workload && o.result === 'ok').length, `${workload}\n${text}`).toBeGreaterThan(5);
    expect(result.faults, text).toHaveLength(1);
    const [fault] = result.faults;
    expect(fault?.failoverMs, text).toEqual(expect.any(Number));
    if (ELECTS.has(fault?.scenario ?? '')) expect(fault?.newTerm ?? 0, text).toBeGreaterThan(fault?.termBefore ?? 0);
    if (fault?.scenario === 'switchover') expect(fault.newLeader, text).not.toBe(fault.leaderBefore);
    expect(result.convergedMs, text).not.toBeNull();
  }, 120_000);

  it('PostgreSQL killed three times under load: its sidecar makes it agree with the journal again, and every node ends with the same rows', async () => {
    // Before the sidecar checked a restarted PostgreSQL against its journal, async writes whose COMMIT
    // the kill interrupted, and applies it had not flushed, were missing on that node for good.
    const result = await runDrill(localTarget(cluster), { scenario: 'kill-postgres', durationMs: 12_000, rate: 150, clients: 8, seed: 11, repetitions: 3, faultMs: 2_000, workloads: ['mixed', 'set'] });
    const text = summary(result);
    expect(result.faults, text).toHaveLength(3);
    expect(result.ops.filter((o) => o.workload === 'mixed' && o.result === 'ok').length, text).toBeGreaterThan(100);
    expect(result.checks.filter((c) => c.valid !== true), text).toEqual([]);
    expect(result.convergedMs, text).not.toBeNull();
  }, 180_000);

  it('the HTML report renders in headless Chromium: charts with data, the fault shaded, the verdict shown', async () => {
    const result = results.get('kill-leader');
    expect(result, 'the kill-leader drill ran first').toBeDefined();
    const dir = await mkdtemp(join(tmpdir(), 'qsync-report-'));
    const browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    try {
      const file = join(dir, 'report.html');
      await writeFile(file, html(result as DrillResult));
      const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
      await page.goto(`file://${file}`);
      expect(await page.textContent('#verdict')).toBe('PASS');
      const charts = page.locator('svg');
      expect(await charts.count()).toBe(2);
      const box = await charts.first().boundingBox();
      expect(box?.width ?? 0).toBeGreaterThan(500);
      // The acknowledged-throughput line has a point per bucket, the latency chart a dot per acknowledged op.
      expect(await page.locator('polyline.ok').getAttribute('points')).toMatch(/^(\d+(\.\d+)?,\d+(\.\d+)? ){10,}/);
      expect(await page.locator('circle.dot').count()).toBe(result?.ops.filter((o) => o.result === 'ok').length);
      expect(await page.locator('rect.fault').count()).toBe(2); // one window, shaded on both charts
      expect(await page.locator('rect.fault').first().boundingBox()).toMatchObject({ width: expect.any(Number) });
      const shot = await page.screenshot({ fullPage: true });
      expect(shot.length).toBeGreaterThan(20_000);
    } finally {
      await browser.close();
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

describe('qsync drill against qsync cluster up', () => {
  it('prints a passing verdict with the failover time and writes the reports; bad input is a clear error', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'qsync-up-'));
    const up = spawn(process.execPath, ['bin/qsync.js', 'cluster', 'up', '--dir', dir], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((ready, failed) => {
        createInterface({ input: up.stdout }).on('line', (line) => {
          if (line.includes('stops the cluster')) ready();
        });
        up.once('exit', (code) => failed(new Error(`cluster up exited (${code})`)));
      });
      const out = join(dir, 'drills');
      const { stdout } = await run(process.execPath, ['bin/qsync.js', 'drill', 'kill-leader', '--duration', '5', '--fault-ms', '2500', '--cluster-dir', dir, '--out', out]);
      expect(stdout).toMatch(/drill kill-leader .*: PASS/);
      expect(stdout).toMatch(/failover \d+ ms \(node \d, term \d+\)/);
      const report = /report: (.+\.html)/.exec(stdout)?.[1];
      expect(report !== undefined && existsSync(report)).toBe(true);
      expect(existsSync((report as string).replace(/\.html$/, '.json'))).toBe(true);
      await expect(run(process.execPath, ['bin/qsync.js', 'drill', 'kill-everything', '--cluster-dir', dir])).rejects.toMatchObject({ code: 2, stderr: expect.stringContaining("unknown scenario 'kill-everything'; one of: kill-leader") });
      await expect(run(process.execPath, ['bin/qsync.js', 'drill', 'kill-leader', '--rate', 'fast', '--cluster-dir', dir])).rejects.toMatchObject({ code: 2, stderr: expect.stringContaining('--rate must be a number >= 1, got "fast"') });
      await expect(run(process.execPath, ['bin/qsync.js', 'drill', 'kill-leader', '--cluster-dir', join(dir, 'nowhere')])).rejects.toMatchObject({ code: 1, stderr: expect.stringContaining('no running local cluster') });
    } finally {
      const exited = new Promise((resolve) => up.once('exit', resolve));
      up.kill('SIGINT');
      await exited;
      await rm(dir, { recursive: true, force: true });
    }
  }, 180_000);
});
