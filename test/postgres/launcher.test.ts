// Proves the launcher works for a normal (non-root) OS user as well as for
// root: under root the test runs the launcher in a child process with the
// postgres user's uid; otherwise the child already runs as a normal user.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { externalPostgres, launchPostgres } from '../../src/postgres/index.js';

const run = promisify(execFile);
const child = fileURLToPath(new URL('./launcher-child.ts', import.meta.url));

async function normalUser(): Promise<{ uid?: number; gid?: number }> {
  if (process.getuid?.() !== 0) return {};
  // Root: the launcher creates the postgres OS user when it is missing.
  const exists = await run('id', ['-u', 'postgres']).then(() => true, () => false);
  if (!exists) await (await launchPostgres()).destroy();
  const uid = Number((await run('id', ['-u', 'postgres'])).stdout);
  const gid = Number((await run('id', ['-g', 'postgres'])).stdout);
  return { uid, gid };
}

describe('embedded PostgreSQL launcher', () => {
  it('starts, crashes, restarts and cleans up as a non-root user', async () => {
    const identity = await normalUser();
    const { stdout } = await run(process.execPath, ['--import', 'tsx', child], { ...identity, cwd: process.cwd(), env: { ...process.env, HOME: '/tmp' } });
    const seen = JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as { uid: number; prepared: string; restarted: boolean };
    expect(seen.uid).not.toBe(0);
    expect(seen).toMatchObject({ prepared: '128', restarted: true });
  });
});

describe('an existing server by connection string', () => {
  it('is described from the URL and never stopped or killed by qsync', async () => {
    const server = externalPostgres('postgresql://app%40x:s%3Acret@db.internal:6543/orders');
    expect(server).toMatchObject({ host: 'db.internal', port: 6543, user: 'app@x', password: 's:cret', database: 'orders', dataDir: null });
    await expect(server.stop()).resolves.toBeUndefined();
    await expect(server.kill()).rejects.toMatchObject({ code: 'PG_LAUNCH', message: expect.stringMatching(/did not start/) });
  });
});
