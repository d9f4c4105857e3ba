// PostgreSQL's own synchronous replication, from the same embedded binaries
// as qsync's nodes: a primary and two streaming standbys, quorum commit
// `ANY 1 (s1, s2)` (one standby's flush, as qsync's quorum of 2 of 3). The
// embedded package ships no pg_basebackup, so the standbys are copies of the
// primary's data directory taken while it is stopped, with standby.signal and
// primary_conninfo.
import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { launchPostgres, type PgServer } from '../src/postgres/index.js';

const run = promisify(execFile);

export interface NativeCluster {
  readonly primary: PgServer;
  readonly standbys: readonly PgServer[];
  stop(): Promise<void>;
}

const REPLICATION = { wal_level: 'replica', max_wal_senders: 10, max_replication_slots: 10, hot_standby: 'on', wal_keep_size: '256MB' } as const;

export async function startNativeCluster(ddl: readonly string[]): Promise<NativeCluster> {
  const root = await mkdtemp(join(tmpdir(), 'qsync-native-'));
  await chmod(root, 0o755); // the postgres OS user (under root) must reach the data directories
  const started: PgServer[] = [];
  try {
    const primaryDir = join(root, 'primary');
    const primary = await launchPostgres({ dataDir: primaryDir, settings: { ...REPLICATION, synchronous_standby_names: 'ANY 1 (s1, s2)', synchronous_commit: 'on' } });
    started.push(primary);
    const client = new pg.Client({ connectionString: primary.connectionString });
    await client.connect();
    // No standby yet: a commit waiting for one would wait for ever.
    await client.query('SET synchronous_commit = local');
    for (const statement of ddl) await client.query(statement);
    await client.end();
    await primary.stop('fast'); // a clean checkpoint: the copies start from a consistent state
    const standbys: PgServer[] = [];
    for (const name of ['s1', 's2']) {
      const dir = join(root, name);
      await mkdir(dir, { recursive: true });
      await run('cp', ['-a', `${primaryDir}/.`, dir]); // -a keeps the postgres OS user's ownership and modes
      await writeFile(join(dir, 'standby.signal'), '');
      await rm(join(dir, 'qsync-postgres.log'), { force: true });
      standbys.push({ dir, name } as unknown as PgServer);
    }
    await primary.start();
    const conninfo = (name: string): string => `host=127.0.0.1 port=${primary.port} user=${primary.user} password=${primary.password} application_name=${name}`;
    const servers: PgServer[] = [];
    for (const [i, name] of ['s1', 's2'].entries()) {
      const dir = (standbys[i] as unknown as { dir: string }).dir;
      const server = await launchPostgres({ dataDir: dir, settings: { ...REPLICATION, primary_conninfo: conninfo(name) } });
      started.push(server);
      servers.push(server);
    }
    await waitStreaming(primary);
    return {
      primary,
      standbys: servers,
      stop: async () => {
        for (const server of [...servers, primary]) await server.stop('immediate').catch(() => undefined);
        await rm(root, { recursive: true, force: true });
      },
    };
  } catch (error) {
    for (const server of started) await server.stop('immediate').catch(() => undefined);
    await rm(root, { recursive: true, force: true });
    throw error;
  }
}

/** Until both standbys stream and count for the quorum. */
async function waitStreaming(primary: PgServer): Promise<void> {
  const client = new pg.Client({ connectionString: primary.connectionString });
  await client.connect();
  try {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const { rows } = await client.query<{ application_name: string; state: string; sync_state: string }>('SELECT application_name, state, sync_state FROM pg_stat_replication');
      if (rows.filter((r) => r.state === 'streaming' && r.sync_state === 'quorum').length === 2) return;
      if (Date.now() > deadline) throw new Error(`native standbys not streaming within 60 s: ${JSON.stringify(rows)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    await client.end();
  }
}
