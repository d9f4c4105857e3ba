// Proves the launcher works for a normal (non-root) OS user as well as for
// root: under root the test runs the launcher in a child process with the
// postgres user's uid; otherwise the child already runs as a normal user.
import { execFile } from 'node:child_process';
import { chmod, mkdir, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { externalPostgres, launchPostgres } from '../../src/postgres/index.js';
import { tempDir } from '../support/journal.js';

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

describe('the superuser password of a launched server', () => {
  it('is random for each data directory, kept in it with mode 0600, and the same after a restart', async () => {
    const temp = await tempDir();
    await chmod(temp.dir, 0o755); // under root, the postgres OS user must reach the data directories
    try {
      const [a, b] = await Promise.all([launchPostgres({ dataDir: join(temp.dir, 'a') }), launchPostgres({ dataDir: join(temp.dir, 'b') })]);
      await Promise.all([a.stop(), b.stop()]);
      expect(a.password).toMatch(/^[A-Za-z0-9_-]{24}$/);
      expect(b.password).not.toBe(a.password);
      expect((await stat(join(temp.dir, 'a', 'qsync-password'))).mode & 0o777).toBe(0o600);
      const again = await launchPostgres({ dataDir: join(temp.dir, 'a') });
      try {
        expect(again.password).toBe(a.password);
        const client = new pg.Client({ connectionString: again.connectionString });
        await client.connect();
        await client.end();
      } finally {
        await again.stop();
      }
    } finally {
      await temp.cleanup();
    }
  });
});

describe('the local connection of a launched server', () => {
  it('goes over the Unix socket in the data directory, with the same credentials; a path too long for a socket keeps TCP only', async () => {
    const temp = await tempDir();
    await chmod(temp.dir, 0o755); // under root, the postgres OS user must reach the data directories
    try {
      const server = await launchPostgres({ dataDir: join(temp.dir, 'short') });
      try {
        expect(server.localConnectionString).toContain(`?host=${encodeURIComponent(join(temp.dir, 'short'))}`);
        const client = new pg.Client({ connectionString: server.localConnectionString ?? '' });
        await client.connect();
        // No server address: the session came over the Unix socket, not TCP.
        expect((await client.query('SELECT inet_server_addr() AS addr')).rows).toEqual([{ addr: null }]);
        await client.end();
      } finally {
        await server.stop();
      }
      const long = await launchPostgres({ dataDir: join(temp.dir, 'd'.repeat(100)) });
      try {
        expect(long.localConnectionString).toBeNull();
        const client = new pg.Client({ connectionString: long.connectionString });
        await client.connect();
        await client.end();
      } finally {
        await long.stop();
      }
    } finally {
      await temp.cleanup();
    }
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

describe('a launch that fails', () => {
  it('says why (with the server log) and leaves no directory behind', async () => {
    const first = await launchPostgres();
    // A private temp dir for the failing launch: other test files launch servers in parallel.
    const { dir, cleanup } = await tempDir();
    await chmod(dir, 0o755);
    const previous = process.env.TMPDIR;
    process.env.TMPDIR = dir;
    try {
      expect(tmpdir()).toBe(dir);
      await expect(launchPostgres({ port: first.port })).rejects.toMatchObject({
        code: 'PG_LAUNCH', message: expect.stringMatching(new RegExp(`pg_ctl start failed .* on port ${first.port}[\\s\\S]*(could not bind|could not create listen socket|Address already in use)`)),
      });
      expect(await readdir(dir)).toEqual([]);
    } finally {
      if (previous === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = previous;
      await cleanup();
      await first.destroy();
    }
  });
});

describe('a data directory the postgres OS user cannot reach', () => {
  it('is refused with the directory and the fix named (when run as root)', async () => {
    const { dir, cleanup } = await tempDir(); // mode 0700, owned by whoever runs the test
    try {
      const dataDir = join(dir, 'pgdata');
      await mkdir(dataDir);
      const launching = launchPostgres({ dataDir });
      if (process.getuid?.() === 0) {
        await expect(launching).rejects.toMatchObject({ code: 'PG_LAUNCH', message: expect.stringMatching(new RegExp(`cannot enter ${dir} \\(mode 700\\): chmod o\\+x`)) });
      } else {
        // A normal user runs PostgreSQL as itself and can reach its own directory.
        await (await launching).destroy();
      }
    } finally {
      await cleanup();
    }
  });
});
