// The deterministic simulator (test/sim/world.ts) runs the production node
// driver against simulated parts. A fixed set of seeds must pass every
// invariant; seeds that once found a real bug stay here as regressions; and
// each planted bug must be caught within a bounded number of seeds.
import { describe, expect, test } from 'vitest';
import { HELD_BUGS, PLANTED_BUGS, simulate, type PlantedBug, type SimResult } from './world.js';

/** Seeds that found real bugs, kept as regressions (see docs/rfc/0002-simulator.md). */
const REGRESSION_SEEDS = [13, 19, 25, 31, 38, 39, 41, 44, 53, 116, 159, 181, 219, 301, 435, 677, 21154, 37122];

function explain(result: SimResult, hold: 'prepare' | 'open' = 'prepare'): string {
  return `seed ${result.seed}: ${result.violation}\n${result.trace.join('\n')}\nreplay: npm run sim -- --seed ${result.seed} --hold ${hold}`;
}

describe('simulated clusters keep every invariant', () => {
  const seeds = [...Array.from({ length: 24 }, (_, i) => i + 1), ...REGRESSION_SEEDS.filter((s) => s > 24)];
  test.each(seeds)('seed %i', async (seed) => {
    const result = await simulate({ seed });
    if (!result.ok) throw new Error(explain(result));
    // It did something: leaders were elected, writes were acknowledged, faults happened.
    expect(result.stats.leaders).toBeGreaterThan(0);
    expect(result.stats.acked).toBeGreaterThan(0);
    expect(result.stats.linearizableReads).toBeGreaterThan(0);
  });
});

/** Seeds run with writes held open that found real bugs, kept as regressions. */
const HELD_REGRESSION_SEEDS = [79302];

describe('simulated clusters whose leaders hold sync writes open keep every invariant (RFC 0027)', () => {
  test.each([...Array.from({ length: 16 }, (_, i) => i + 1), ...HELD_REGRESSION_SEEDS])('seed %i', async (seed) => {
    const result = await simulate({ seed, hold: 'open' });
    if (!result.ok) throw new Error(explain(result, 'open'));
    expect(result.stats.leaders).toBeGreaterThan(0);
    expect(result.stats.acked).toBeGreaterThan(0);
    // The phase that terminates a held write's session while another waits for its row ran.
    expect(result.stats.sessionKills).toBeGreaterThan(0);
  });
});

test('a seed replays exactly: the same trace and the same counts', async () => {
  const a = await simulate({ seed: 6, traceLines: 200 });
  const b = await simulate({ seed: 6, traceLines: 200 });
  expect(b.stats).toEqual(a.stats);
  expect(b.trace).toEqual(a.trace);
  expect(a.stats.crashes).toBeGreaterThan(0);
  expect(a.stats.pgCrashes).toBeGreaterThan(0);
});

test('a client session that PostgreSQL ends alone fails its write, and nothing acknowledged is lost', async () => {
  // pg_terminate_backend of one of the leader's sessions, at any step of a write, while the server goes on.
  // Seed 4 is one whose fault schedule arms such a kill (seed 1 did until row locks were modelled in every run).
  const result = await simulate({ seed: 4 });
  expect(result.stats.sessionKills).toBeGreaterThan(0);
  expect(result.violation).toBeNull();
});

describe('planted bugs are caught', () => {
  // voteIgnoresVclock breaks about 1 seed in 20 (seeds 1..200: 10-11 failures), first at seed 52 since
  // subscribers ack every second; the others within a few seeds. commitBeforeJournal needs a sidecar
  // crash inside one journal fsync after an async COMMIT: about 1 seed in 50 (seeds 1..400: 8), first
  // at seed 132. Seeds are fixed: this never flakes.
  const seedsMax = (bug: PlantedBug): number => (bug === 'commitBeforeJournal' ? 150 : 80);
  test.each(PLANTED_BUGS)('%s is caught within its fixed seeds', async (bug) => {
    let caught: SimResult | null = null;
    // The held path's bugs show only where leaders hold sync writes open; the others are sought where they prepare.
    const hold = HELD_BUGS.includes(bug) ? 'open' : 'prepare';
    for (let seed = 1; seed <= seedsMax(bug) && caught === null; seed += 1) {
      const result = await simulate({ seed, bug, hold });
      if (!result.ok) caught = result;
    }
    expect(caught, `${bug} was not caught in ${seedsMax(bug)} seeds`).not.toBeNull();
    const found = caught as SimResult;
    // The report names the violation and ends its trace there.
    expect(found.violation).toMatch(/.+/);
    expect(found.trace.at(-1)).toContain('VIOLATION');
    // And the same seed without the bug passes.
    const clean = await simulate({ seed: found.seed, hold });
    if (!clean.ok) throw new Error(explain(clean, hold));
  });
});
