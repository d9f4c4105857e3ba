// Proves the PostgreSQL groundwork against a real server: migrations apply
// once and refuse an edited file; table modes install and remove the right
// triggers and refuse every table qsync cannot replicate, naming the reason;
// startup checks name the fix for a server without prepared transactions.
import { cp, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkServer, MIGRATIONS_DIR, migrate, setTableMode } from '../../src/postgres/index.js';
import { tempDir } from '../support/journal.js';
import { startNode, type TestNode } from '../support/postgres.js';

let node: TestNode;
beforeAll(async () => {
  node = await startNode();
});
afterAll(async () => node?.destroy());

async function triggers(table: string): Promise<string[]> {
  const { rows } = await node.sql.query<{ tgname: string }>(`SELECT tgname FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal ORDER BY tgname`, [table]);
  return rows.map((r) => r.tgname);
}

describe('migrations', () => {
  it('apply once, record checksums, and do nothing the second time', async () => {
    expect(await migrate(node.sql)).toEqual([]);
    const { rows } = await node.sql.query('SELECT version, name, length(checksum) AS len FROM qsync.schema_migrations ORDER BY version');
    expect(rows).toEqual([{ version: 1, name: '0001_schema.sql', len: 64 }, { version: 2, name: '0002_client_roles.sql', len: 64 }, { version: 3, name: '0003_capture_key.sql', len: 64 }, { version: 4, name: '0004_capture_in_steps.sql', len: 64 }, { version: 5, name: '0005_sql_front.sql', len: 64 }, { version: 6, name: '0006_capture_held.sql', len: 64 }, { version: 7, name: '0007_capture_checks_deferred.sql', len: 64 }]);
    await checkServer(node.sql, { preparedNeeded: 64, schema: true });
  });

  it('refuse a migration file changed after it was applied, naming it', async () => {
    const { dir, cleanup } = await tempDir();
    await cp(MIGRATIONS_DIR, dir, { recursive: true });
    const file = join(dir, '0001_schema.sql');
    await writeFile(file, `${await readFile(file, 'utf8')}\n-- edited\n`);
    await expect(migrate(node.sql, dir)).rejects.toMatchObject({ code: 'PG_MIGRATION', message: expect.stringMatching(/migration 0001_schema.sql was changed after it was applied/) });
    await cleanup();
  });

  it('refuse a database migrated by a newer qsync', async () => {
    await node.sql.query(`INSERT INTO qsync.schema_migrations (version, name, checksum) VALUES (999, '0999_future.sql', 'x')`);
    await expect(migrate(node.sql)).rejects.toMatchObject({ message: expect.stringMatching(/schema version 999 .* newer than this qsync knows .* upgrade qsync/) });
    await node.sql.query('DELETE FROM qsync.schema_migrations WHERE version = 999');
  });
});

describe('table modes', () => {
  beforeAll(async () => {
    await node.sql.query(`
      CREATE TABLE accounts (id bigint PRIMARY KEY, balance numeric NOT NULL);
      CREATE TABLE nokey (id int, v text);
      CREATE TABLE parted (id int PRIMARY KEY) PARTITION BY RANGE (id);
      CREATE TABLE prices (id int PRIMARY KEY, amount money);
      CREATE TABLE docs (id int PRIMARY KEY, body json);
      CREATE TABLE refs (id int PRIMARY KEY, rel regclass);
      CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY);
      CREATE VIEW accounts_view AS SELECT * FROM accounts;`);
  });

  it('sync installs capture, truncate guard and fence; async drops the fence; local drops all', async () => {
    expect(await setTableMode(node.sql, 'accounts', 'sync')).toMatchObject({ name: 'public.accounts', copied: [] });
    expect(await triggers('accounts')).toEqual(['qsync_capture_delete', 'qsync_capture_insert', 'qsync_capture_update', 'qsync_fence', 'qsync_refuse_truncate']);
    expect((await node.sql.query(`SELECT mode, key_columns FROM qsync.tables WHERE table_name = 'public.accounts'`)).rows).toEqual([{ mode: 'sync', key_columns: ['id'] }]);
    await setTableMode(node.sql, 'public.accounts', 'async');
    expect(await triggers('accounts')).toEqual(['qsync_capture_delete', 'qsync_capture_insert', 'qsync_capture_update', 'qsync_refuse_truncate']);
    await expect(node.sql.query('TRUNCATE accounts')).rejects.toMatchObject({ code: 'QS004', message: expect.stringMatching(/TRUNCATE of replicated table public.accounts is not replicated/) });
    await setTableMode(node.sql, 'accounts', 'local');
    expect(await triggers('accounts')).toEqual([]);
    expect((await node.sql.query(`SELECT count(*)::int AS n FROM qsync.tables`)).rows).toEqual([{ n: 0 }]);
    await node.sql.query('TRUNCATE accounts');
  });

  it.each([
    ['nokey', /public.nokey: it has no primary key.*ALTER TABLE public.nokey ADD PRIMARY KEY/],
    ['parted', /public.parted: it is partitioned; mark each partition instead/],
    ['prices', /public.prices: column amount has type money.*use numeric/],
    ['docs', /public.docs: column body has type json.*use jsonb or text/],
    ['refs', /public.refs: column rel has type regclass/],
    ['scratch', /public.scratch: it is unlogged/],
    ['accounts_view', /it is not a plain table/],
    ['missing_table', /missing_table: it does not exist/],
  ])('refuses %s with the reason', async (table, message) => {
    await expect(setTableMode(node.sql, table, 'sync')).rejects.toMatchObject({ code: 'PG_TABLE', message: expect.stringMatching(message) });
    expect((await node.sql.query(`SELECT count(*)::int AS n FROM qsync.tables`)).rows).toEqual([{ n: 0 }]);
  });

  it('refuses a temporary table', async () => {
    const session = await node.connect();
    await session.query('CREATE TEMP TABLE tmp1 (id int PRIMARY KEY)');
    await expect(setTableMode(session, 'tmp1', 'async')).rejects.toMatchObject({ message: expect.stringMatching(/it is temporary/) });
  });
});

describe('startup checks', () => {
  it('name the fix for max_prepared_transactions = 0', async () => {
    const bare = await startNode({ settings: { max_prepared_transactions: 0 }, migrate: false });
    try {
      await expect(checkServer(bare.sql, { preparedNeeded: 64, schema: true })).rejects.toMatchObject({
        code: 'PG_CHECK',
        message: expect.stringMatching(/max_prepared_transactions is 0;.*ALTER SYSTEM SET max_prepared_transactions = 128; then restart PostgreSQL[\s\S]*the qsync schema is not installed/),
      });
    } finally {
      await bare.destroy();
    }
  });
});
