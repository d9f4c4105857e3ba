// Real PostgreSQL for tests: launched from the embedded binaries on a free
// port in a temp directory, migrated, and destroyed afterwards.
import pg from 'pg';
import type { Change } from '../../src/core/record.js';
import type { Lsn, ReplicaId, Term } from '../../src/core/types.js';
import { launchPostgres, migrate, PgLeaderTransaction, type LaunchOptions, type LeaderOutcome, type PgServer, type PgWork } from '../../src/postgres/index.js';
import { leaderWrite, PREPARING } from '../../src/sidecar/leader-write.js';

export interface TestNode {
  readonly server: PgServer;
  /** A connection for the test's own queries. */
  readonly sql: pg.Client;
  /** Another connection (closed by destroy). */
  connect(): Promise<pg.Client>;
  /** Reconnect `sql` after a server restart. */
  reconnect(): Promise<pg.Client>;
  destroy(): Promise<void>;
}

export async function startNode(options: LaunchOptions & { migrate?: boolean } = {}): Promise<TestNode> {
  const server = await launchPostgres(options);
  const clients: pg.Client[] = [];
  const connect = async (): Promise<pg.Client> => {
    const client = new pg.Client({ connectionString: server.connectionString });
    client.on('error', () => undefined); // a server crash in a test is expected; queries still reject
    await client.connect();
    clients.push(client);
    return client;
  };
  let sql = await connect();
  if (options.migrate !== false) await migrate(sql);
  const node = {
    server,
    get sql() {
      return sql;
    },
    connect,
    reconnect: async () => (sql = await connect()),
    destroy: async () => {
      await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
      await server.destroy();
    },
  };
  return node;
}

/** Every row of a table as jsonb text, ordered by its primary key: equal strings mean equal tables. */
export async function tableImage(client: pg.ClientBase, table: string, orderBy: string): Promise<string[]> {
  const { rows } = await client.query<{ row: string }>(`SELECT to_jsonb(t)::text AS row FROM ${table} t ORDER BY ${orderBy}`);
  return rows.map((r) => r.row);
}

/**
 * The leader's order of duties (src/sidecar/leader-write.ts) on one
 * connection, as the sidecar runs it; without `journal`, nothing is journaled.
 */
export function leaderWriteOn(client: pg.ClientBase, write: {
  readonly term: Term; readonly replica: ReplicaId; readonly captureKey: string; readonly idempotencyKey: string | null;
  readonly reserve: () => { readonly lsn: Lsn; readonly gid: string; readonly time: number };
  readonly journal?: (txn: { lsn: Lsn; gid: string; time: number; sync: boolean; changes: Change[] }) => Promise<void>;
}, body: PgWork): Promise<LeaderOutcome> {
  return leaderWrite(new PgLeaderTransaction(client, write, write.captureKey), { reserve: write.reserve, journal: write.journal ?? (() => Promise.resolve()), prepareSent: () => undefined, ...PREPARING }, body);
}
