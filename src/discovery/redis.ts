// Redis discovery and events (optional; DESIGN.md §9). Redis is never in the
// commit or election path: every call here is fire-and-forget with a short
// timeout, fails fast while Redis is away, and is only logged; the status and
// leader keys are written again on the next interval.
//
//   qsync:<cluster>:node:<replica>  this node's status (JSON), expiring after 3 intervals
//   qsync:<cluster>:leader          the leader (JSON {replica, term, client, admin, at}); written
//                                   by a Lua script that refuses a lower term, or the same term
//                                   from another node: a deposed leader cannot overwrite it
//   qsync:<cluster>:events          pub/sub channel: leader-changed, stepped-down, limbo-timeout,
//                                   split-brain, elected, drill-start, drill-end (JSON)
import { Redis } from 'ioredis';
import type { Logger } from '../log.js';
import type { NodeEvent } from '../sidecar/io.js';

export const leaderKey = (cluster: string): string => `qsync:${cluster}:leader`;
export const nodeKey = (cluster: string, replica: number): string => `qsync:${cluster}:node:${replica}`;
export const eventsChannel = (cluster: string): string => `qsync:${cluster}:events`;

/** KEYS[1] the leader key; ARGV term, replica, value. Returns {1, value} when written, {0, current} when refused. */
const CLAIM_LEADER = `
local current = redis.call('GET', KEYS[1])
local term = tonumber(ARGV[1])
local replica = tonumber(ARGV[2])
if current then
  local ok, held = pcall(cjson.decode, current)
  if ok and type(held) == 'table' and tonumber(held.term) ~= nil then
    local heldTerm = tonumber(held.term)
    if heldTerm > term or (heldTerm == term and tonumber(held.replica) ~= replica) then
      return {0, current}
    end
  end
end
redis.call('SET', KEYS[1], ARGV[3])
return {1, ARGV[3]}
`;

export interface LeaderRecord {
  readonly replica: number;
  readonly term: number;
  /** The leader's client address, for clients. */
  readonly client: string;
  readonly admin: string | null;
  /** When it was written, ms since the epoch. */
  readonly at: number;
}

/** A Redis connection that never queues or retries a command for long: Redis being down must not hold anything up. */
export function redisConnection(url: string, log: Logger | null, name: string): Redis {
  const redis = new Redis(url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: 1_000,
    connectTimeout: 2_000,
    retryStrategy: (times) => Math.min(100 * times, 2_000),
    connectionName: name,
  });
  let down = false;
  redis.on('error', (error: Error) => {
    if (down) return;
    down = true;
    log?.warn({ redis: url.replace(/\/\/[^@]*@/, '//***@'), err: error.message }, 'Redis unreachable; discovery retries in the background (commits and elections go on)');
  });
  redis.on('ready', () => {
    if (down) log?.info('Redis reachable again');
    down = false;
  });
  return redis;
}

/** Resolves once the connection is ready, or after `ms` (commands then fail fast, as when Redis is down). */
export function whenReady(redis: Redis, ms: number): Promise<void> {
  if (redis.status === 'ready') return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    redis.once('ready', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/**
 * Write the leader key unless it holds a higher term, or the same term for
 * another node. Returns what the key holds afterwards and whether this wrote it.
 */
export async function claimLeader(redis: Redis, cluster: string, record: LeaderRecord): Promise<{ written: boolean; current: LeaderRecord | null }> {
  const [written, current] = (await redis.eval(CLAIM_LEADER, 1, leaderKey(cluster), record.term, record.replica, JSON.stringify(record))) as [number, string];
  return { written: written === 1, current: parseLeader(current) };
}

function parseLeader(text: string | null): LeaderRecord | null {
  if (text === null) return null;
  try {
    const value = JSON.parse(text) as LeaderRecord;
    return typeof value.client === 'string' && typeof value.term === 'number' ? value : null;
  } catch {
    return null;
  }
}

/**
 * The leader as Redis knows it, if its node's status key is alive and says it
 * accepts writes; else the writable node of the highest term, if any; else
 * the leader key as it stands (it may be stale: the node it names answers
 * NotLeader with a hint then). Also every live node's client address.
 */
export async function findLeader(redis: Redis, cluster: string): Promise<LeaderRecord | null> {
  return (await discover(redis, cluster)).leader;
}

export async function discover(redis: Redis, cluster: string): Promise<{ leader: LeaderRecord | null; nodes: readonly PublishedStatus[] }> {
  const leader = parseLeader(await redis.get(leaderKey(cluster)));
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', `qsync:${cluster}:node:*`, 'COUNT', 100);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  const statuses = keys.length === 0 ? [] : (await redis.mget(...keys)).flatMap((text) => {
    try {
      return text === null ? [] : [JSON.parse(text) as PublishedStatus];
    } catch {
      return [];
    }
  });
  statuses.sort((a, b) => a.replica - b.replica);
  const writable = statuses.filter((s) => s.writable && s.client !== null).sort((a, b) => b.term - a.term);
  if (leader !== null && writable.some((s) => s.replica === leader.replica && s.term === leader.term)) return { leader, nodes: statuses };
  const best = writable[0];
  return { leader: best === undefined ? leader : { replica: best.replica, term: best.term, client: best.client as string, admin: best.admin, at: best.at }, nodes: statuses };
}

/** Publish one event on the cluster's channel (best effort). */
export async function publishEvent(redis: Redis, cluster: string, event: Record<string, unknown>): Promise<void> {
  await redis.publish(eventsChannel(cluster), JSON.stringify({ at: Date.now(), ...event }));
}

/** What a node writes to its status key. */
export interface PublishedStatus {
  readonly replica: number;
  readonly term: number;
  readonly role: string;
  readonly writable: boolean;
  readonly leader: number | null;
  readonly client: string | null;
  readonly admin: string | null;
  readonly limbo: number;
  readonly postgres: boolean;
  readonly at: number;
}

export interface DiscoveryOptions {
  readonly url: string;
  readonly cluster: string;
  readonly replica: number;
  readonly intervalMs: number;
  readonly log: Logger;
  /** The node's status now, as published. */
  readonly status: () => PublishedStatus;
}

/** A sidecar's part: its status key on an interval, the leader key while it leads, its events. */
export class RedisDiscovery {
  readonly #options: DiscoveryOptions;
  readonly #redis: Redis;
  readonly #timer: NodeJS.Timeout;
  /** Refusals of the leader key are logged once per term. */
  #refusedTerm = -1;

  constructor(options: DiscoveryOptions) {
    this.#options = options;
    this.#redis = redisConnection(options.url, options.log, `qsync-${options.cluster}-${options.replica}`);
    this.#timer = setInterval(() => this.#refresh(), options.intervalMs);
    this.#timer.unref();
  }

  /** Driver events: the ones operators watch go to the channel; winning writes the leader key at once. */
  observe(event: NodeEvent): void {
    const { cluster, replica } = this.#options;
    const send = (kind: string, fields: Record<string, unknown>): void => {
      this.#quietly('publishing an event', publishEvent(this.#redis, cluster, { kind, replica, ...fields }));
    };
    switch (event.kind) {
      case 'elected':
        send('elected', { term: event.term, ms: event.ms });
        this.#refresh();
        return;
      case 'leaderChanged':
        send('leader-changed', { term: event.term, leader: event.leader });
        return;
      case 'steppedDown':
        send('stepped-down', { term: event.term, pending: event.pending, reason: event.reason });
        this.#refresh();
        return;
      case 'limboTimeout':
        send('limbo-timeout', { term: event.term, fromLsn: event.fromLsn, transactions: event.transactions });
        return;
      case 'splitBrain':
        send('split-brain', { term: event.term, from: event.from, recordTerm: event.recordTerm, lsn: event.lsn });
        return;
      default:
    }
  }

  #refresh(): void {
    const { cluster, replica, intervalMs } = this.#options;
    const status = this.#options.status();
    this.#quietly('writing the status key', this.#redis.set(nodeKey(cluster, replica), JSON.stringify(status), 'PX', 3 * intervalMs));
    if (!status.writable || status.client === null) return;
    const record: LeaderRecord = { replica, term: status.term, client: status.client, admin: status.admin, at: status.at };
    this.#quietly('claiming the leader key', claimLeader(this.#redis, cluster, record).then(({ written, current }) => {
      if (written || this.#refusedTerm === status.term) return;
      this.#refusedTerm = status.term;
      this.#options.log.warn({ held: current }, 'Redis leader key holds a newer term or another leader of this term; not overwritten');
    }));
  }

  #quietly(what: string, work: Promise<unknown>): void {
    work.catch((error: unknown) => this.#options.log.debug({ err: (error as Error).message }, `Redis: ${what} failed; retried on the next interval`));
  }

  /** A clean stop takes this node's status key away (best effort): it no longer serves. */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.#redis.del(nodeKey(this.#options.cluster, this.#options.replica)).catch(() => undefined);
    this.#redis.disconnect();
  }
}
