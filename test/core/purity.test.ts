// Proves the lint rule that keeps src/core deterministic actually fires: a
// core file that reads the clock, randomness, timers or Node I/O fails lint,
// and the same code outside src/core does not trip the core-only rule.
import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';

const eslint = new ESLint({ cwd: process.cwd() });

async function coreViolations(code: string, filePath = 'src/core/probe.ts'): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath });
  return (result?.messages ?? []).filter((m) => /src\/core/.test(m.message)).map((m) => m.message);
}

describe('src/core purity lint', () => {
  it.each([
    ['the clock', 'export const t = Date.now();'],
    ['a Date', 'export const t = new Date();'],
    ['randomness', 'export const r = Math.random();'],
    ['a timer', 'setTimeout(() => undefined, 1);'],
    ['performance', 'export const t = performance.now();'],
    ['process', 'export const t = process.hrtime();'],
    ['node:fs', "import { readFileSync } from 'node:fs'; export const f = readFileSync;"],
    ['bare fs', "import { readFileSync } from 'fs'; export const f = readFileSync;"],
    ['await', 'export async function f(): Promise<number> { return await Promise.resolve(1); }'],
  ])('rejects %s in src/core', async (_what, code) => {
    expect((await coreViolations(code)).length).toBeGreaterThan(0);
  });

  it('leaves shells free to use them', async () => {
    expect(await coreViolations('export const t = Date.now();', 'src/journal/probe.ts')).toEqual([]);
  });
});
