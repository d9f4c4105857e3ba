// Two-phase helpers and crash reconciliation (DESIGN.md §8).
//
// After a crash, PostgreSQL may hold prepared transactions the journal has
// already decided. reconcile() asks the journal's view for each prepared gid
// of this cluster and makes PostgreSQL agree: confirmed → COMMIT PREPARED,
// rolled back or never journaled → ROLLBACK PREPARED, pending → keep in the
// limbo. Every step is idempotent, so a crash during reconcile is harmless.
import type pg from 'pg';
import { gidPrefix, parseGid } from '../core/gid.js';
import type { Lsn, ReplicaId } from '../core/types.js';

/** PostgreSQL's SQLSTATE for "prepared transaction with identifier ... does not exist". */
const UNDEFINED_OBJECT = '42704';

export interface PreparedEntry {
  readonly gid: string;
  readonly replica: ReplicaId;
  readonly lsn: Lsn;
}

/** Prepared transactions of this cluster in this database, by owner and lsn. */
export async function listPrepared(client: pg.ClientBase, clusterId: string): Promise<PreparedEntry[]> {
  const { rows } = await client.query<{ gid: string }>(
    `SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND starts_with(gid, $1)`, [gidPrefix(clusterId)]);
  const entries: PreparedEntry[] = [];
  for (const { gid } of rows) {
    const parsed = parseGid(clusterId, gid);
    if (parsed !== null) entries.push({ gid, ...parsed });
  }
  return entries.sort((a, b) => a.replica - b.replica || a.lsn - b.lsn);
}

/** SQLSTATE 55006: another session is finishing (or still preparing) this gid right now. */
const OBJECT_IN_USE = '55006';
const BUSY_RETRIES_MAX = 50;

async function finish(client: pg.ClientBase, verb: 'COMMIT' | 'ROLLBACK', gid: string): Promise<boolean> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      await client.query(`${verb} PREPARED ${client.escapeLiteral(gid)}`);
      return true;
    } catch (error) {
      const code = (error as { code?: string }).code;
      if (code === UNDEFINED_OBJECT) return false;
      // Two paths may decide one gid at once (a PROMOTE and a void write's rollback); the later
      // one waits for the earlier and then finds it gone.
      if (code !== OBJECT_IN_USE || attempt >= BUSY_RETRIES_MAX) throw error;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

/**
 * COMMIT or ROLLBACK PREPARED each of `gids` on one connection: on a
 * pipelining client they leave at once, each its own transaction with its own
 * Sync, so one that fails fails no other. `each` hears whether each was still
 * prepared. One that another session is finishing right now is retried alone.
 * Throws the first other failure, after every answer is in.
 */
export async function finishPipelined(client: pg.ClientBase, verb: 'commit' | 'rollback', gids: readonly string[], each?: (gid: string, finished: boolean) => void): Promise<void> {
  const word = verb === 'commit' ? 'COMMIT' : 'ROLLBACK';
  const settled = await Promise.allSettled(gids.map((gid) => client.query(`${word} PREPARED ${client.escapeLiteral(gid)}`)));
  let failure: unknown = null;
  for (const [i, result] of settled.entries()) {
    const gid = gids[i] as string;
    if (result.status === 'fulfilled') {
      each?.(gid, true);
      continue;
    }
    const code = (result.reason as { code?: string }).code;
    if (code === UNDEFINED_OBJECT) each?.(gid, false);
    else if (code === OBJECT_IN_USE && failure === null) each?.(gid, await finish(client, word, gid));
    else failure ??= result.reason;
  }
  if (failure !== null) throw failure;
}

/** COMMIT PREPARED; false when there was no such prepared transaction (already finished). */
export function commitPrepared(client: pg.ClientBase, gid: string): Promise<boolean> {
  return finish(client, 'COMMIT', gid);
}

/** ROLLBACK PREPARED; false when there was no such prepared transaction (already finished). */
export function rollbackPrepared(client: pg.ClientBase, gid: string): Promise<boolean> {
  return finish(client, 'ROLLBACK', gid);
}

export type JournalVerdict = 'confirmed' | 'rolled-back' | 'pending' | 'unknown';

export interface ReconcileReport {
  readonly committed: readonly string[];
  readonly rolledBack: readonly string[];
  readonly kept: readonly string[];
}

/**
 * A node's prepared transactions as recovery sees them: the sidecar's
 * database (production and simulated) is one.
 */
export interface PreparedStore {
  listPrepared(): Promise<PreparedEntry[]>;
  /** COMMIT or ROLLBACK PREPARED each gid; `each` hears whether it was still prepared. */
  finish(verb: 'commit' | 'rollback', gids: readonly string[], each?: (gid: string, finished: boolean) => void): Promise<void>;
}

/** Make PostgreSQL's prepared transactions agree with the journal's verdicts. */
export async function reconcile(store: PreparedStore, verdict: (entry: PreparedEntry) => JournalVerdict): Promise<ReconcileReport> {
  const committed: string[] = [];
  const rolledBack: string[] = [];
  const kept: string[] = [];
  // Owner order, lsn order, one at a time: confirmed entries commit in the order they were confirmed.
  for (const entry of await store.listPrepared()) {
    switch (verdict(entry)) {
      case 'confirmed':
        await store.finish('commit', [entry.gid], (gid, finished) => finished && committed.push(gid));
        break;
      case 'pending':
        kept.push(entry.gid);
        break;
      case 'rolled-back':
      case 'unknown':
        await store.finish('rollback', [entry.gid], (gid, finished) => finished && rolledBack.push(gid));
        break;
    }
  }
  return { committed, rolledBack, kept };
}
