// `qsync drill <scenario>`: rehearse a failover on the cluster that
// `qsync cluster up` runs, and print, save and draw what happened.
// Exit codes: 0 every check passed; 1 a check failed or could not decide; 2 usage.
import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { html, summary, verdictWord } from '../drill/report.js';
import { DRILL_DEFAULTS, runDrill, SCENARIOS, type Progress, type Scenario } from '../drill/run.js';
import { remoteTarget, type DrillTarget } from '../drill/target.js';
import { publishEvent, redisConnection, whenReady } from '../discovery/redis.js';
import { WORKLOADS, type Workload } from '../drill/workload.js';

export const DRILL_USAGE = `  drill <scenario> [options]  rehearse a failover on the cluster of qsync cluster up, check the history
               scenarios: ${SCENARIOS.join(', ')}
               --duration S (${DRILL_DEFAULTS.durationMs / 1000})  --rate OPS (${DRILL_DEFAULTS.rate})  --clients N (${DRILL_DEFAULTS.clients})  --seed N (${DRILL_DEFAULTS.seed})
               --repetitions N (${DRILL_DEFAULTS.repetitions})  --fault-ms MS (${DRILL_DEFAULTS.faultMs})  --workload ${WORKLOADS.join(',')} (all)
               --cluster-dir D (.qsync/cluster)  --out D (.qsync/drills): JSON and HTML report`;

function positive(name: string, text: string | undefined, fallback: number, min = 1): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isFinite(value) || value < min) throw new RangeError(`--${name} must be a number >= ${min}, got ${JSON.stringify(text)}`);
  return value;
}

function bar(p: Progress): string {
  const width = 30;
  const done = Math.min(width, Math.round((p.elapsedMs / p.durationMs) * width));
  const phase = p.phase === 'running' ? `${(p.elapsedMs / 1000).toFixed(0)}/${(p.durationMs / 1000).toFixed(0)} s` : p.phase;
  return `[${'#'.repeat(done)}${'.'.repeat(width - done)}] ${phase}  ok ${p.ok}  failed ${p.fail}  unknown ${p.unknown}${p.fault === null ? '' : `  FAULT: ${p.fault}`}`;
}

export async function drill(argv: readonly string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv], allowPositionals: true,
      options: {
        duration: { type: 'string' }, rate: { type: 'string' }, clients: { type: 'string' }, seed: { type: 'string' }, repetitions: { type: 'string' },
        'fault-ms': { type: 'string' }, workload: { type: 'string' }, 'cluster-dir': { type: 'string', default: '.qsync/cluster' }, out: { type: 'string', default: '.qsync/drills' },
      },
    });
  } catch (error) {
    console.error(`qsync drill: ${(error as Error).message}\n\nusage:\n${DRILL_USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  const scenario = positionals[0] as Scenario | undefined;
  if (scenario === undefined || !SCENARIOS.includes(scenario)) {
    console.error(`qsync drill: ${scenario === undefined ? 'which scenario?' : `unknown scenario '${scenario}'`}; one of: ${SCENARIOS.join(', ')}\n\nusage:\n${DRILL_USAGE}`);
    return 2;
  }
  let options;
  try {
    const workloads = values.workload === undefined ? WORKLOADS : values.workload.split(',').map((w) => w.trim());
    const unknown = workloads.filter((w) => !WORKLOADS.includes(w as Workload));
    if (unknown.length > 0) throw new RangeError(`unknown workload ${unknown.join(', ')}; choose from ${WORKLOADS.join(', ')}`);
    options = {
      scenario,
      durationMs: positive('duration', values.duration, DRILL_DEFAULTS.durationMs / 1000) * 1000,
      rate: positive('rate', values.rate, DRILL_DEFAULTS.rate),
      clients: Math.round(positive('clients', values.clients, DRILL_DEFAULTS.clients)),
      seed: Math.round(positive('seed', values.seed, DRILL_DEFAULTS.seed, 0)),
      repetitions: Math.round(positive('repetitions', values.repetitions, DRILL_DEFAULTS.repetitions)),
      faultMs: positive('fault-ms', values['fault-ms'], DRILL_DEFAULTS.faultMs, 100),
      workloads: workloads as Workload[],
    };
  } catch (error) {
    console.error(`qsync drill: ${(error as Error).message}`);
    return 2;
  }
  let target;
  try {
    target = await remoteTarget(values['cluster-dir']);
  } catch (error) {
    console.error(`qsync drill: ${(error as Error).message}`);
    return 1;
  }
  const tty = process.stderr.isTTY;
  let lastLine = 0;
  const progress = (p: Progress): void => {
    if (tty) process.stderr.write(`\r${bar(p)}\u001b[K`);
    else if (p.phase !== 'running' || p.elapsedMs - lastLine >= 5_000) {
      lastLine = p.elapsedMs;
      process.stderr.write(`${bar(p)}\n`);
    }
  };
  console.log(`drill ${scenario} on ${target.nodes.length} nodes (${target.nodes.map((n) => n.clientAddress).join(', ')})`);
  let result;
  await announce(target, { kind: 'drill-start', scenario, seed: options.seed, durationMs: options.durationMs });
  try {
    result = await runDrill(target, options, progress);
  } catch (error) {
    if (tty) process.stderr.write('\n');
    console.error(`qsync drill: ${(error as Error).message}`);
    await announce(target, { kind: 'drill-end', scenario, verdict: 'error', error: (error as Error).message });
    return 1;
  }
  await announce(target, { kind: 'drill-end', scenario, run: result.run, verdict: verdictWord(result.valid) });
  if (tty) process.stderr.write('\n');
  const out = resolve(values.out);
  await mkdir(out, { recursive: true });
  const base = join(out, result.run);
  await writeFile(`${base}.json`, `${JSON.stringify(result, null, 1)}\n`);
  await writeFile(`${base}.html`, html(result));
  console.log(summary(result));
  console.log(`\nverdict: ${verdictWord(result.valid)}\nreport: ${base}.html\nhistory: ${base}.json`);
  return result.valid === true ? 0 : 1;
}

/** Drill start and end on the cluster's Redis event channel, when it has one (best effort: never holds the drill up). */
async function announce(target: DrillTarget, event: Record<string, unknown>): Promise<void> {
  if (target.redisUrl === undefined) return;
  const redis = redisConnection(target.redisUrl, null, 'qsync-drill');
  try {
    await whenReady(redis, 2_000);
    await publishEvent(redis, target.cluster, event);
  } catch {
    // Redis down: the drill goes on without its events.
  } finally {
    redis.disconnect();
  }
}
