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
