// Startup checks: everything qsync needs from a PostgreSQL server, each
// failure with the fix, all of them reported at once.
import type pg from 'pg';
import { QsyncError } from '../core/errors.js';
import { readMigrations } from './migrate.js';

export const SERVER_VERSION_MIN = 130000; // pg_current_xact_id() and xid8

export class PgCheckError extends QsyncError<'PG_CHECK'> {
  constructor(readonly problems: readonly string[]) {
    super('PG_CHECK', `PostgreSQL is not ready for qsync:\n${problems.map((p) => `  - ${p}`).join('\n')}`, { problems });
  }
}

export interface CheckOptions {
  /** Prepared transactions the limbo may hold at once. */
  readonly preparedNeeded: number;
  /** Check that the schema is migrated to this qsync's version (after migrate()). */
  readonly schema?: boolean;
}

export async function checkServer(client: pg.ClientBase, options: CheckOptions): Promise<void> {
  const { rows } = await client.query<{ version: number; prepared: number; superuser: boolean; can_create: boolean; can_set_role: boolean | null; user: string }>(`
    SELECT current_setting('server_version_num')::int AS version,
           current_setting('max_prepared_transactions')::int AS prepared,
           (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser,
           has_database_privilege(current_database(), 'CREATE') AS can_create,
           CASE WHEN current_setting('server_version_num')::int >= 150000
                THEN has_parameter_privilege('session_replication_role', 'SET') END AS can_set_role,
           current_user AS user`);
  const s = rows[0];
  if (s === undefined) throw new PgCheckError(['the server answered no rows to the settings query']);
  const problems: string[] = [];
  if (s.version < SERVER_VERSION_MIN) problems.push(`server version ${s.version} is too old; qsync needs PostgreSQL 13 or newer`);
  if (s.prepared < options.preparedNeeded) {
    problems.push(`max_prepared_transactions is ${s.prepared}; qsync keeps each pending sync transaction prepared and needs at least ${options.preparedNeeded}: ALTER SYSTEM SET max_prepared_transactions = ${Math.max(options.preparedNeeded, 128)}; then restart PostgreSQL`);
  }
  if (!s.superuser) {
    problems.push(`role ${s.user} is not a superuser: qsync commits and rolls back the prepared transactions of every client role, which PostgreSQL allows only to their owner or a superuser; connect the sidecar as a superuser`);
  }
  if (!s.superuser && !s.can_create) problems.push(`role ${s.user} cannot create the qsync schema: GRANT CREATE ON DATABASE ${await databaseName(client)} TO ${s.user}`);
  if (!s.superuser && s.can_set_role !== true) {
    problems.push(`role ${s.user} cannot SET session_replication_role, which apply needs: GRANT SET ON PARAMETER session_replication_role TO ${s.user} (PostgreSQL 15+), or use a superuser`);
  }
  if (options.schema === true) problems.push(...(await schemaProblems(client)));
  if (problems.length > 0) throw new PgCheckError(problems);
}

async function databaseName(client: pg.ClientBase): Promise<string> {
  const { rows } = await client.query<{ name: string }>('SELECT quote_ident(current_database()) AS name');
  return rows[0]?.name ?? 'the database';
}

async function schemaProblems(client: pg.ClientBase): Promise<string[]> {
  const known = await readMigrations();
  const exists = await client.query<{ present: boolean }>(`SELECT to_regclass('qsync.schema_migrations') IS NOT NULL AS present`);
  if (exists.rows[0]?.present !== true) return ['the qsync schema is not installed; the sidecar installs it at start (migrations/)'];
  const { rows } = await client.query<{ version: number }>('SELECT version FROM qsync.schema_migrations');
  const applied = new Set(rows.map((r) => r.version));
  const missing = known.filter((m) => !applied.has(m.version)).map((m) => m.name);
  return missing.length === 0 ? [] : [`qsync schema migrations not applied: ${missing.join(', ')}`];
}
