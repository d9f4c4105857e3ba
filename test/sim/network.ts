// The simulated network. A subscription (subscriber -> relay) is a stream, as
// TCP is: in order, with latency; a partition or a crash breaks it, and what
// was in flight is lost; the subscriber reconnects with backoff and
// subscribes again from its vclock. Election messages are datagrams on top:
// delayed (so reordered), dropped and duplicated at the seed's rates, and
// only where a stream between the two nodes is up, as in production.
// A relay may also leave a gap in its stream (`gapRate`), as a faulty or
// hostile peer would: the subscriber must refuse the record past it before
// its journal or PostgreSQL sees it, and subscribe again.
import type { ElectionMessage } from '../../src/core/election.js';
import type { JournalRecord } from '../../src/core/record.js';
import { REPLICA_LOCAL, type ReplicaId } from '../../src/core/types.js';
import { limits } from '../../src/core/limits.js';
import { RelayFilter } from '../../src/core/relay-filter.js';
import { vclockCompare, vclockGet, type VClock } from '../../src/core/vclock.js';
import type { Transport, TransportHandlers } from '../../src/sidecar/io.js';
import type { Life, Rng, Scheduler } from './scheduler.js';
import type { SimDisk } from './storage.js';

/** A subscriber's acks besides those for the stream's own records, as src/net/peer.ts sends them: when its vclock moved, looked at this often, and every second anyway. */
const ACK_CHANGED_MS = 20;
const ACK_REFRESH_MS = 1_000;

export interface NetworkProfile {
  readonly latencyMsMin: number;
  readonly latencyMsMax: number;
  readonly dropRate: number;
  readonly duplicateRate: number;
  /** Per record relayed: the chance that the relay skips it, leaving a gap (drawn from `gaps`, not the main generator). */
  readonly gapRate: number;
  readonly gaps: Rng;
  /** Planted bug: relays drop a third node's records instead of sending them late (core/relay-filter.ts). */
  readonly thirdPartyDropped?: boolean;
}

interface Endpoint {
  readonly node: number;
  readonly life: Life;
  readonly handlers: TransportHandlers;
  readonly disk: SimDisk;
}

/** One subscription: `subscriber` follows `relay`'s journal. */
interface Stream {
  readonly subscriber: Endpoint;
  readonly relay: Endpoint;
  /** The relay's rule for this subscriber: the production one. */
  readonly filter: RelayFilter;
  open: boolean;
  /** Delivery times so far, per direction: a stream never reorders. */
  downAt: number;
  upAt: number;
  /** The last ack the subscriber sent on this stream, and when. */
  acked: { vclock: VClock; atMs: number };
}

export interface NetworkObserver {
  /** Every election message as it leaves a node (votes are checked here). */
  sent(from: number, to: number, message: ElectionMessage): void;
  trace(line: string): void;
}

export class SimNetwork {
  readonly #scheduler: Scheduler;
  readonly #rng: Rng;
  readonly #profile: NetworkProfile;
  readonly #observer: NetworkObserver;
  readonly #endpoints = new Map<number, Endpoint>();
  readonly #streams = new Set<Stream>();
  /** Directed: "a>b" means a cannot reach b. */
  #blocked = new Set<string>();

  constructor(scheduler: Scheduler, rng: Rng, profile: NetworkProfile, observer: NetworkObserver) {
    this.#scheduler = scheduler;
    this.#rng = rng;
    this.#profile = profile;
    this.#observer = observer;
  }

  reaches(from: number, to: number): boolean {
    return !this.#blocked.has(`${from}>${to}`);
  }

  /** Replace the partition; streams it cuts break. */
  partition(blocked: ReadonlyArray<readonly [number, number]>): void {
    this.#blocked = new Set(blocked.map(([a, b]) => `${a}>${b}`));
    for (const stream of this.#streams) {
      if (!this.#linked(stream.subscriber.node, stream.relay.node)) this.#close(stream);
    }
  }

  get blocked(): string[] {
    return [...this.#blocked].sort();
  }

  #linked(a: number, b: number): boolean {
    return this.reaches(a, b) && this.reaches(b, a);
  }

  #latency(): number {
    return this.#rng.range(this.#profile.latencyMsMin, this.#profile.latencyMsMax);
  }

  /** A node's transport for one life. */
  transport(node: number, startPeers: readonly number[], life: Life, disk: SimDisk): Transport {
    let peers = startPeers;
    let endpoint: Endpoint | null = null;
    return {
      start: async (handlers) => {
        endpoint = { node, life, handlers, disk };
        this.#endpoints.set(node, endpoint);
        for (const peer of peers) this.#subscribeLoop(endpoint, peer, 50);
      },
      sendRaft: (to, message) => {
        if (endpoint !== null) this.#datagram(endpoint, to, message);
      },
      // The simulated clusters keep their static membership; a peer added would be subscribed to here.
      setPeers: (members) => {
        const added = members.map((m) => m.replica as number).filter((p) => !peers.includes(p));
        if (endpoint !== null) for (const peer of added) this.#subscribeLoop(endpoint, peer, 50);
        peers = [...peers, ...added];
      },
      connected: (replica) => [...this.#streams].some((s) => s.open && s.subscriber === endpoint && s.relay.node === replica),
      stop: async () => {
        for (const stream of this.#streams) if (stream.subscriber === endpoint || stream.relay === endpoint) this.#close(stream);
      },
    };
  }

  /** A node crashed: its streams break. */
  crashed(node: number): void {
    for (const stream of this.#streams) if (stream.subscriber.node === node || stream.relay.node === node) this.#close(stream);
    this.#endpoints.delete(node);
  }

  #subscribeLoop(subscriber: Endpoint, peer: number, backoffMs: number): void {
    this.#scheduler.after(backoffMs, () => {
      const relay = this.#endpoints.get(peer);
      if (relay === undefined || !relay.life.alive || !this.#linked(subscriber.node, peer)) {
        this.#subscribeLoop(subscriber, peer, Math.min(1_000, backoffMs * 2));
        return;
      }
      this.#open(subscriber, relay);
    }, subscriber.life);
  }

  #open(subscriber: Endpoint, relay: Endpoint): void {
    const now = this.#scheduler.now;
    const filter = new RelayFilter({
      relay: relay.node as ReplicaId, subscriber: subscriber.node as ReplicaId, delayMs: limits.relayThirdPartyDelayMs, heldMax: limits.relayHeldMax,
      ...(this.#profile.thirdPartyDropped === true ? { thirdPartyDropped: true } : {}),
    });
    const stream: Stream = { subscriber, relay, filter, open: true, downAt: now, upAt: now, acked: { vclock: [], atMs: -Infinity } };
    this.#streams.add(stream);
    // SUBSCRIBE travels up; the relay then streams what the subscriber lacks, from its journal's disk.
    const from = subscriber.handlers.subscribeFrom();
    this.#up(stream, () => this.#relay(stream, from));
    // As in production (src/net/peer.ts): the subscriber also acks when its vclock moved, and every second anyway.
    const refresh = (): void => {
      this.#scheduler.after(ACK_CHANGED_MS, () => {
        if (!stream.open) return;
        const { vclock } = subscriber.handlers.ack();
        if (this.#scheduler.now - stream.acked.atMs >= ACK_REFRESH_MS || vclockCompare(vclock, stream.acked.vclock) !== 'equal') this.#ack(stream);
        refresh();
      }, subscriber.life);
    };
    refresh();
  }

  /** The subscriber acknowledges what it holds on this stream; the relay's filter and node hear it. */
  #ack(stream: Stream): void {
    const { subscriber, relay } = stream;
    const ack = subscriber.handlers.ack();
    stream.acked = { vclock: ack.vclock, atMs: this.#scheduler.now };
    this.#up(stream, () => {
      stream.filter.acked(ack.vclock);
      relay.handlers.onAck(subscriber.node as ReplicaId, ack.vclock, ack.term);
    });
  }

  #relay(stream: Stream, from: VClock): void {
    const { relay, subscriber, filter } = stream;
    let next = 0;
    const send = (records: readonly JournalRecord[]): void => {
      for (const record of records) {
        const outgoing = relay.handlers.outgoing(record);
        relay.handlers.onSent(outgoing);
        this.#down(stream, () => this.#receive(stream, outgoing));
      }
    };
    // A third node's records fall due after the relay delay: look again then.
    let armed = false;
    const arm = (): void => {
      const dueMs = filter.nextDueMs;
      if (dueMs === null || armed) return;
      armed = true;
      this.#scheduler.at(Math.max(dueMs, this.#scheduler.now), () => {
        armed = false;
        if (!stream.open) return;
        send(filter.due(this.#scheduler.now));
        arm();
      }, relay.life);
    };
    const pump = (): void => {
      if (!stream.open) {
        relay.disk.listeners.delete(pump);
        return;
      }
      const records = relay.disk.records;
      for (; next < records.length; next += 1) {
        const record = records[next] as JournalRecord;
        if (record.replica === REPLICA_LOCAL || record.replica === subscriber.node || record.lsn <= vclockGet(from, record.replica)) continue;
        if (this.#profile.gapRate > 0 && this.#profile.gaps.chance(this.#profile.gapRate)) {
          this.#observer.trace(`relay ${relay.node} skips ${record.replica}:${record.lsn} to ${subscriber.node}: a gap`);
          continue;
        }
        send(filter.offer(record, this.#scheduler.now));
      }
      arm();
    };
    relay.disk.listeners.add(pump);
    pump();
  }

  #receive(stream: Stream, record: JournalRecord): void {
    const { subscriber, relay } = stream;
    subscriber.handlers.onRecord(record).then(() => {
      if (stream.open) this.#ack(stream);
    }, (error: Error) => {
      this.#observer.trace(`link ${subscriber.node}<-${relay.node} closed: ${error.message}`);
      this.#close(stream);
    });
  }

  #down(stream: Stream, deliver: () => void): void {
    stream.downAt = Math.max(stream.downAt, this.#scheduler.now + this.#latency());
    this.#scheduler.at(stream.downAt, () => {
      if (stream.open) deliver();
    }, stream.subscriber.life);
  }

  #up(stream: Stream, deliver: () => void): void {
    stream.upAt = Math.max(stream.upAt, this.#scheduler.now + this.#latency());
    this.#scheduler.at(stream.upAt, () => {
      if (stream.open) deliver();
    }, stream.relay.life);
  }

  #close(stream: Stream): void {
    if (!stream.open) return;
    stream.open = false;
    this.#streams.delete(stream);
    const { subscriber } = stream;
    if (subscriber.life.alive && this.#endpoints.get(subscriber.node) === subscriber) this.#subscribeLoop(subscriber, stream.relay.node, 100);
  }

  #datagram(from: Endpoint, to: ReplicaId, message: ElectionMessage): void {
    this.#observer.sent(from.node, to, message);
    const target = this.#endpoints.get(to);
    if (target === undefined || !this.reaches(from.node, to)) return;
    const linked = [...this.#streams].some((s) => s.open && ((s.subscriber === from && s.relay === target) || (s.subscriber === target && s.relay === from)));
    if (!linked) return;
    const copies = this.#rng.chance(this.#profile.dropRate) ? 0 : this.#rng.chance(this.#profile.duplicateRate) ? 2 : 1;
    for (let i = 0; i < copies; i += 1) {
      this.#scheduler.after(this.#latency(), () => {
        if (this.#endpoints.get(to) === target && this.reaches(from.node, to)) target.handlers.onRaft(from.node as ReplicaId, message);
      }, target.life);
    }
  }
}
