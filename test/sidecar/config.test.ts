// Configuration: a JSON file, QSYNC_* environment variables and flags (later
// sources win), validated at once with every problem listed; and `qsync
// start` with a bad configuration exits 2 with that list, starting nothing.
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { operatingError } from '../../src/cli/operating.js';
import { ConfigError, gatherConfig, validateConfig } from '../../src/sidecar/config.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'qsync-config-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const BASE = ['--replica-id', '1', '--cluster-id', 'prod', '--peers', '2@127.0.0.1:7402+7502+7602', '--pg-url', 'postgresql://u@127.0.0.1/db', '--data-dir', '/tmp/x', '--peer-port', '7401', '--client-port', '7501', '--insecure'];

function problems(argv: readonly string[], env: NodeJS.ProcessEnv = {}): readonly string[] {
  try {
    validateConfig(gatherConfig(argv, env));
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  return [];
}

describe('configuration', () => {
  it('takes a valid set of flags, with defaults and the peer admin address', () => {
    const config = validateConfig(gatherConfig(BASE, {}));
    expect(config).toMatchObject({ replicaId: 1, quorum: 2, electionTimeoutMs: 1_000, heartbeatIntervalMs: 100, synchroTimeoutMs: 5_000, logLevel: 'info', redisStatusIntervalMs: 1_000, clientPoolConnections: 64 });
    expect(validateConfig(gatherConfig([...BASE, '--client-pool-connections', '16'], {})).clientPoolConnections).toBe(16);
    expect(problems([...BASE, '--client-pool-connections', '0']).join('\n')).toMatch(/--client-pool-connections/);
    expect(config.peers).toEqual([{ replica: 2, host: '127.0.0.1', port: 7402, client: '127.0.0.1:7502', admin: '127.0.0.1:7602' }]);
  });

  it('lists every problem at once, each with the flag that sets it', () => {
    const found = problems(['--replica-id', '40', '--cluster-id', 'bad id!', '--peers', 'nonsense', '--pg-url', 'not a url', '--election-mode', 'sometimes', '--peer-port', 'x', '--client-port', '7501', '--log-level', 'loud', '--redis-url', 'http://x']);
    const text = found.join('\n');
    for (const flag of ['--replica-id', '--cluster-id', '--peers', '--pg-url', '--data-dir', '--election-mode', '--peer-port', '--log-level', '--redis-url']) expect(text).toContain(flag);
    expect(found.length).toBeGreaterThanOrEqual(9);
  });

  it('checks settings against each other', () => {
    const text = problems([...BASE, '--quorum', '1', '--admin-port', '7601', '--admin-host', '0.0.0.0', '--heartbeat-interval-ms', '900']).join('\n');
    expect(text).toMatch(/--quorum: .*majority/);
    expect(text).toMatch(/--admin-token: required when the admin interface binds to 0.0.0.0/);
    expect(text).toMatch(/--heartbeat-interval-ms: 900 must be at most half the election timeout/);
    expect(problems([...BASE, '--admin-port', '7601', '--admin-host', '0.0.0.0'], { QSYNC_ADMIN_TOKEN: 'short' }).join('\n')).toMatch(/--admin-token: at least 16 characters/);
    expect(problems([...BASE, '--sql-port', '7701', '--sql-tls-cert', 'c.pem']).join('\n')).toMatch(/--sql-tls-cert, --sql-tls-key: give both/);
    expect(problems([...BASE, '--sql-tls-cert', 'c.pem', '--sql-tls-key', 'k.pem']).join('\n')).toMatch(/--sql-tls-cert: there is no SQL port/);
  });

  it('takes secrets from a file or the environment, never from the command line', async () => {
    const noInsecure = BASE.filter((a) => a !== '--insecure');
    // On the command line, ps shows them to every local user: refused, with where to put them instead.
    const argv = problems([...noInsecure, '--secret', 'a-secret-of-24-characters', '--admin-token', 'a-token-of-24-characters', '--pg-url', 'postgresql://u:pw@127.0.0.1/db']).join('\n');
    expect(argv).toMatch(/--secret: a secret is never taken from the command line.*--secret-file, mode 0600.*QSYNC_SECRET/);
    expect(argv).toMatch(/--admin-token: a secret is never taken from the command line/);
    expect(argv).toMatch(/--pg-url: carries a password.*PGPASSWORD/);
    expect(validateConfig(gatherConfig(noInsecure, { QSYNC_SECRET: 'a-secret-of-24-characters' })).secret).toBe('a-secret-of-24-characters');
    const file = join(dir, 'secret');
    await writeFile(file, 'a-secret-from-a-file-0123\n', { mode: 0o600 });
    expect(validateConfig(gatherConfig([...noInsecure, '--secret-file', file], {})).secret).toBe('a-secret-from-a-file-0123');
    const open = join(dir, 'secret-open');
    await writeFile(open, 'a-secret-from-a-file-0123\n', { mode: 0o644 });
    expect(problems([...noInsecure, '--secret-file', open]).join('\n')).toMatch(/may be read by others \(mode 644\); chmod 600/);
  });

  it('reads a JSON file, then the environment, then flags; later sources win', async () => {
    const file = join(dir, 'node.json');
    await writeFile(file, JSON.stringify({ replicaId: 1, clusterId: 'from-file', peers: [{ replica: 2, host: '127.0.0.1', port: 7402 }], pgUrl: 'postgresql://127.0.0.1/db', dataDir: '/tmp/q', peerPort: 7401, clientPort: 7501, insecure: true, synchroTimeoutMs: 2_000, electionTimeoutMs: 3_000 }));
    const config = validateConfig(gatherConfig(['--config', file, '--election-timeout-ms', '4000'], { QSYNC_CLUSTER_ID: 'from-env', QSYNC_SYNCHRO_TIMEOUT_MS: '2500', QSYNC_ELECTION_TIMEOUT_MS: '3500' }));
    expect(config).toMatchObject({ clusterId: 'from-env', synchroTimeoutMs: 2_500, electionTimeoutMs: 4_000, peerPort: 7401 });
  });

  it('names unknown keys in the file, a file that is not JSON, and a file that is missing', async () => {
    const typo = join(dir, 'typo.json');
    await writeFile(typo, JSON.stringify({ replicaID: 1, synchroTimeout: 5 }));
    expect(problems(['--config', typo]).join('\n')).toMatch(/the config file: unknown settings replicaID, synchroTimeout; known: replicaId, clusterId/);
    const broken = join(dir, 'broken.json');
    await writeFile(broken, '{ "replicaId": 1, ');
    expect(problems(['--config', broken])).toEqual([expect.stringMatching(/--config: .*broken.json is not valid JSON/)]);
    expect(problems(['--config', join(dir, 'missing.json')])).toEqual([expect.stringMatching(/--config: cannot read .*missing.json/)]);
    const array = join(dir, 'array.json');
    await writeFile(array, '[1, 2]');
    expect(problems(['--config', array])).toEqual([expect.stringMatching(/must hold one JSON object/)]);
  });

  it('qsync start exits 2 with every problem listed and starts nothing', async () => {
    const run = promisify(execFile);
    const failure = await run(process.execPath, ['bin/qsync.js', 'start', '--replica-id', '0', '--peer-port', 'abc'], { env: { ...process.env, QSYNC_CLUSTER_ID: 'ok' } }).then(() => null, (error: { code: number; stderr: string }) => error);
    expect(failure?.code).toBe(2);
    expect(failure?.stderr).toMatch(/invalid configuration/);
    for (const flag of ['--replica-id', '--peer-port', '--pg-url', '--data-dir', '--client-port']) expect(failure?.stderr).toContain(flag);
    expect(failure?.stderr).not.toContain('--cluster-id');
  });

  it('an operating error (a PostgreSQL that does not answer, a port in use) is one line with its fix, not a stack trace', async () => {
    const run = promisify(execFile);
    const dir = await mkdtemp(join(tmpdir(), 'qsync-operating-'));
    const start = (extra: string[]): Promise<{ code: number; stderr: string } | null> => run(process.execPath, ['bin/qsync.js', 'start', '--replica-id', '1', '--cluster-id', 'op', '--peers', '2@127.0.0.1:1',
      '--data-dir', join(dir, 'journal'), '--insecure', '--peer-port', '0', '--client-port', '0', ...extra], { timeout: 30_000 }).then(() => null, (error: { code: number; stderr: string }) => error);
    const refused = await start(['--pg-url', 'postgresql://nobody@127.0.0.1:1/db']);
    expect(refused?.code).toBe(1);
    expect(refused?.stderr.trim()).toBe('qsync start: nothing answers at 127.0.0.1:1: start PostgreSQL there, or fix --pg-url (QSYNC_PG_URL)');
    expect(refused?.stderr).not.toMatch(/\n\s+at /);
    // The operating errors and their fixes, as the command prints them.
    expect(operatingError(Object.assign(new Error('listen EADDRINUSE'), { code: 'EADDRINUSE', syscall: 'listen', address: '127.0.0.1', port: 7501 })))
      .toBe('127.0.0.1:7501 is in use by another process: stop it, or give this node other ports (--peer-port, --client-port, --admin-port, --sql-port)');
    expect(operatingError(Object.assign(new Error('EACCES'), { code: 'EACCES', syscall: 'open', path: '/var/lib/qsync/journal' }))).toMatch(/may not use \/var\/lib\/qsync\/journal: give it write access/);
    expect(operatingError(new TypeError('undefined is not a function'))).toBeNull();
    await rm(dir, { recursive: true, force: true });
  });
});
