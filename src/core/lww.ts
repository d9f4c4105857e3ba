// Which applied changes last-writer-wins judges (DESIGN.md §5): every change
// to an async table, whatever its TXN. A transaction that touches a sync
// table and an async one is a sync TXN, and the writer's capture stamps the
// versions of its async keys as it does for an async write; every node that
// applies it must record the same versions, or a concurrent async write to
// one of those keys is judged differently there than on the writer, and the
// replicas differ (RFC 0022). The applier (postgres/apply.ts) and the
// simulator's PostgreSQL both ask this question.
import type { TableMode } from './record.js';

/**
 * Whether applying a change to a table of `mode`, carried by a TXN that is
 * sync or not, goes through last-writer-wins. `syncTxnSkipsLww` is a planted
 * bug (the simulator's): it leaves a sync TXN's async changes unjudged, as
 * the applier did before RFC 0022.
 */
export function judgedByLww(mode: TableMode, txnSync: boolean, syncTxnSkipsLww = false): boolean {
  return mode === 'async' && !(syncTxnSkipsLww && txnSync);
}
