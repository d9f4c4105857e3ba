// Pipelined queries (docs/rfc/0013-leader-round-trips.md). A client made
// with node-postgres' `pipeline: true` sends a query without waiting for the
// answer to the one before; PostgreSQL still runs them one after another, in
// order, and each has its own Sync, so a failure fails that query (and, in a
// transaction, every later one with "current transaction is aborted"). With
// the cork (cork.ts) the queries of one turn leave in one write: a write's
// BEGIN and its statements cost one round trip instead of one each.
import type pg from 'pg';

/** Whether the client sends queries before earlier ones are answered. */
export function pipelines(client: pg.ClientBase): boolean {
  return (client as { pipeline?: unknown }).pipeline === true;
}

/**
 * Run queries in order and answer their results in order, or the first
 * failure. On a pipelining client they all leave at once; on another one by
 * one, as before.
 */
export async function queryAll(client: pg.ClientBase, queries: readonly pg.QueryConfig[]): Promise<pg.QueryResult[]> {
  if (!pipelines(client)) {
    const results: pg.QueryResult[] = [];
    for (const query of queries) results.push(await client.query(query));
    return results;
  }
  const sent = queries.map((query) => client.query(query));
  // Every promise gets a handler at once: the failures after the first are its consequence.
  const settled = await Promise.allSettled(sent);
  return settled.map((s) => {
    if (s.status === 'rejected') throw s.reason;
    return s.value;
  });
}
