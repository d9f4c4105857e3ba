// The benches' per-process readings from /proc: a process that wakes up
// counts its context switches, one that is gone counts none.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import { contextSwitches } from '../../bench/stats.js';

describe('contextSwitches', () => {
  it('counts a process waking up, and 0 once it is gone', async () => {
    // Sleeps and wakes 200 times, then waits to be killed: each wake-up is a switch.
    const child = spawn(process.execPath, ['-e', `
      let n = 0;
      const tick = () => { n += 1; if (n < 200) setTimeout(tick, 1); else { process.stdout.write('done\\n'); setInterval(() => undefined, 60_000); } };
      process.stdout.write('up\\n');
      tick();
    `], { stdio: ['ignore', 'pipe', 'inherit'] });
    const lines: string[] = [];
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => lines.push(...chunk.split('\n').filter(Boolean)));
    const pid = child.pid as number;
    while (!lines.includes('up')) await new Promise((resolve) => setTimeout(resolve, 5));
    const before = contextSwitches(pid);
    while (!lines.includes('done')) await new Promise((resolve) => setTimeout(resolve, 5));
    const after = contextSwitches(pid);
    expect(before).toBeGreaterThan(0);
    expect(after - before).toBeGreaterThanOrEqual(100);
    child.kill('SIGKILL');
    await once(child, 'exit');
    expect(contextSwitches(pid)).toBe(0);
  });
});
