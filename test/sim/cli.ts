// npm run sim -- --seed N [--bug NAME]         replay one seed, print its trace
// npm run sim -- --seeds 1000 [--from S]       run many seeds: progress bar, then a summary
// --hold prepare|open                          how the leaders hold sync writes (RFC 0027); by default
//                                              odd seeds prepare and even seeds hold open
// npm run sim -- --bug NAME --seeds 200        how soon a planted bug is caught
// SIM_WATCH=w123 (a write) or SIM_WATCH=:3:293 (a gid's end) adds every PostgreSQL decision on it to the trace.
import { parseArgs } from 'node:util';
import { PLANTED_BUGS, simulate, type PlantedBug, type SimResult } from './world.js';

const { values } = parseArgs({
  options: {
    seed: { type: 'string' },
    seeds: { type: 'string' },
    from: { type: 'string', default: '1' },
    bug: { type: 'string' },
    'fault-ms': { type: 'string' },
    trace: { type: 'string', default: '40' },
    hold: { type: 'string' },
  },
});
if (values.hold !== undefined && values.hold !== 'prepare' && values.hold !== 'open') {
  process.stderr.write(`--hold is prepare or open, got ${JSON.stringify(values.hold)}\n`);
  process.exit(2);
}
const holdOf = (seed: number): 'prepare' | 'open' => (values.hold as 'prepare' | 'open' | undefined) ?? (seed % 2 === 0 ? 'open' : 'prepare');

function number(name: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 0) {
    process.stderr.write(`--${name} must be a non-negative integer, got ${JSON.stringify(text)}\n`);
    process.exit(2);
  }
  return value;
}

const bug = values.bug as PlantedBug | undefined;
if (bug !== undefined && !PLANTED_BUGS.includes(bug)) {
  process.stderr.write(`unknown --bug ${JSON.stringify(bug)}; planted bugs: ${PLANTED_BUGS.join(', ')}\n`);
  process.exit(2);
}
const faultMs = number('fault-ms', values['fault-ms']);
const traceLines = number('trace', values.trace) ?? 40;
const common = { ...(bug === undefined ? {} : { bug }), ...(faultMs === undefined ? {} : { faultMs }), traceLines };

function report(result: SimResult): void {
  const s = result.stats;
  process.stdout.write(`${result.trace.join('\n')}\n\nseed ${result.seed}: ${result.ok ? 'ok' : `FAILED: ${result.violation}`}\n`);
  process.stdout.write(`${s.nodes} nodes, ${s.events} events, ${(s.simulatedMs / 1000).toFixed(1)} s simulated, ${s.crashes} crashes, ${s.pgCrashes} PostgreSQL crashes, ${s.sessionKills} sessions killed alone, ${s.leaders} terms with a leader; writes: ${s.acked} acknowledged, ${s.rolledBack} rolled back, ${s.unknown} unknown; ${s.linearizableReads} linearizable reads\n`);
  if (!result.ok) process.stdout.write(`replay: npm run sim -- --seed ${result.seed} --hold ${holdOf(result.seed)}${bug === undefined ? '' : ` --bug ${bug}`}${faultMs === undefined ? '' : ` --fault-ms ${faultMs}`}\n`);
}

const seed = number('seed', values.seed);
if (seed !== undefined) {
  const result = await simulate({ seed, hold: holdOf(seed), ...common });
  report(result);
  process.exit(result.ok ? 0 : 1);
}

const count = number('seeds', values.seeds) ?? 100;
const from = number('from', values.from) ?? 1;
const started = Date.now();
const failures: SimResult[] = [];
let events = 0;
for (let i = 0; i < count; i += 1) {
  const result = await simulate({ seed: from + i, hold: holdOf(from + i), ...common });
  events += result.stats.events;
  if (!result.ok) failures.push(result);
  if (process.stdout.isTTY || i === count - 1 || (i + 1) % 25 === 0) {
    const width = 30;
    const done = Math.round(((i + 1) / count) * width);
    const rate = ((i + 1) / ((Date.now() - started) / 60_000)).toFixed(0);
    process.stdout.write(`${process.stdout.isTTY ? '\r' : ''}[${'#'.repeat(done)}${'.'.repeat(width - done)}] ${i + 1}/${count} seeds, ${failures.length} failed, ${rate} seeds/min${process.stdout.isTTY ? '' : '\n'}`);
  }
}
const minutes = (Date.now() - started) / 60_000;
process.stdout.write(`\n\n${count} seeds (${from}..${from + count - 1}) in ${(minutes * 60).toFixed(1)} s: ${(count / minutes).toFixed(0)} seeds/min, ${(events / (minutes * 60)).toFixed(0)} events/s; ${failures.length} failed\n`);
for (const failure of failures.slice(0, 20)) process.stdout.write(`  seed ${failure.seed} (${holdOf(failure.seed)}): ${failure.violation?.split('\n')[0]}\n`);
if (failures.length > 0) process.stdout.write(`replay one: npm run sim -- --seed ${failures[0]?.seed}${bug === undefined ? '' : ` --bug ${bug}`}\n`);
process.exit(failures.length > 0 ? 1 : 0);
