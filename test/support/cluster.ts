// Helpers for the end-to-end tests on a local cluster.
import type { ClusterNode } from '../../src/cli/cluster.js';

/** What one node's PostgreSQL holds, read directly (not through qsync). */
export async function rowsOn(node: ClusterNode, sql: string, params: unknown[] = []): Promise<unknown[]> {
  const client = await node.sql();
  try {
    return (await client.query(sql, params)).rows;
  } finally {
    await client.end();
  }
}

/**
 * Sync writes waiting in this node's limbo, held as the leader holds them:
 * prepared (syncHold prepare, or SERIALIZABLE) or open in their session,
 * idle inside the transaction (syncHold open).
 */
export async function limboHeld(node: ClusterNode): Promise<number> {
  const [row] = await rowsOn(node, `SELECT (SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'qsync:%')
    + (SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' AND backend_type = 'client backend' AND pid <> pg_backend_pid()) AS n`) as Array<{ n: string }>;
  return Number(row?.n ?? 0);
}

/** Retry `check` until it passes; after `timeoutMs`, fail with its last error, prefixed by `what`. */
export async function eventually(check: () => Promise<void>, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await check();
      return;
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`${what}: ${(error as Error).message}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
