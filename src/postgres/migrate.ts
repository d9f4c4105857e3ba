// Schema migrations: numbered SQL files in migrations/, applied at sidecar
// start in one transaction under an advisory lock, each recorded with its
// sha-256 in qsync.schema_migrations. A changed applied file, or a database
// migrated by a newer qsync, is refused with the file named.
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { QsyncError } from '../core/errors.js';

export const MIGRATIONS_DIR = fileURLToPath(new URL('../../migrations/', import.meta.url));
const LOCK_KEY = 0x71_73_79_6e; // 'qsyn'
const FILE_PATTERN = /^(\d{4})_[a-z0-9_]+\.sql$/;

export class MigrationError extends QsyncError<'PG_MIGRATION'> {
  constructor(message: string, context: Record<string, unknown> = {}) {
    super('PG_MIGRATION', message, context);
  }
}

export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
  readonly checksum: string;
}

export async function readMigrations(dir: string = MIGRATIONS_DIR): Promise<Migration[]> {
  const names = (await readdir(dir)).filter((n) => n.endsWith('.sql')).sort();
  const migrations: Migration[] = [];
  for (const name of names) {
    const match = FILE_PATTERN.exec(name);
    if (match === null) throw new MigrationError(`migration file ${name} is not named NNNN_words.sql`, { name });
    const sql = await readFile(`${dir}/${name}`, 'utf8');
    const version = Number(match[1]);
    if (migrations.some((m) => m.version === version)) throw new MigrationError(`two migration files have version ${version}`, { name });
    migrations.push({ version, name, sql, checksum: createHash('sha256').update(sql).digest('hex') });
  }
  return migrations;
}

/** Apply what is missing; returns the names applied. Safe to run from several processes at once. */
export async function migrate(client: pg.ClientBase, dir: string = MIGRATIONS_DIR): Promise<string[]> {
  const migrations = await readMigrations(dir);
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock($1)', [LOCK_KEY]);
    await client.query(`CREATE SCHEMA IF NOT EXISTS qsync;
      CREATE TABLE IF NOT EXISTS qsync.schema_migrations (
        version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
    const { rows } = await client.query<{ version: number; name: string; checksum: string }>('SELECT version, name, checksum FROM qsync.schema_migrations ORDER BY version');
    for (const row of rows) {
      const known = migrations.find((m) => m.version === row.version);
      if (known === undefined) {
        throw new MigrationError(`the database has qsync schema version ${row.version} (${row.name}), newer than this qsync knows (up to ${migrations.at(-1)?.version ?? 0}); upgrade qsync`, { version: row.version });
      }
      if (known.checksum !== row.checksum) {
        throw new MigrationError(`migration ${known.name} was changed after it was applied (checksum ${row.checksum.slice(0, 12)} in the database, ${known.checksum.slice(0, 12)} on disk); restore the file: applied migrations are never edited, add a new one instead`, { name: known.name });
      }
    }
    const applied: string[] = [];
    for (const migration of migrations.filter((m) => !rows.some((r) => r.version === m.version))) {
      await client.query(migration.sql);
      await client.query('INSERT INTO qsync.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)', [migration.version, migration.name, migration.checksum]);
      applied.push(migration.name);
    }
    await client.query('COMMIT');
    return applied;
  } catch (error) {
    await client.query('ROLLBACK');
    throw error;
  }
}
