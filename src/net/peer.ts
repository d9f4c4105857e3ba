// Peer links between sidecars: the relay side (a TCP server that authenticates
// subscribers and streams them the journal) and the subscriber side (a client
// that connects to one peer, subscribes from its own vclock, hands every
// record to the node, and acknowledges). Full mesh: every node subscribes to
// every other node; duplicates are dropped by the node (lsn order).
//
// Nothing a peer sends can crash the process: every refusal closes that one
// link with a logged reason, and the server keeps accepting.
import { createServer, connect, type Server, type Socket } from 'node:net';
import { connect as tlsConnect, createServer as createTlsServer } from 'node:tls';
import { AssertionFailed } from '../core/assert.js';
import { limits } from '../core/limits.js';
import type { ElectionMessage } from '../core/election.js';
import { PROTOCOL_VERSION, type PeerMessage } from '../core/messages.js';
import { recordBytes, type JournalRecord } from '../core/record.js';
import type { ReplicaId, Term } from '../core/types.js';
import type { Journal, JournalCursor } from '../journal/index.js';
import type { SnapshotBegin, SnapshotOffer, SnapshotSink } from '../sidecar/io.js';
import { vclockCompare, vclockCovers, vclockFormat, type VClock } from '../core/vclock.js';
import { RelayFilter } from '../core/relay-filter.js';
import type { Logger } from '../log.js';
import { nonce, proof, proofMatches } from './auth.js';
import { PortGuard, type Admission, type RefusalObserver } from './guard.js';
import type { PeerTls } from './tls.js';
import { Link, LinkClosed } from './link.js';
import { listen } from './listen.js';

/** How often a subscriber acknowledges even without records from this link. */
const ACK_REFRESH_MS = 1_000;

/** After its journal moved (records from other links), how soon a subscriber acknowledges on this one: acks of a burst share one message. */
const ACK_CHANGED_MS = 20;

export interface PeerIdentity {
  readonly cluster: string;
  readonly replica: ReplicaId;
  readonly secret: string;
  /** Mutual TLS under the cluster CA on every peer link (tls.ts); absent: plain TCP. */
  readonly tls?: PeerTls;
}

/** Why a hello is refused, or null to accept it. */
function checkHello(me: PeerIdentity, hello: PeerMessage & { kind: 'hello' }): string | null {
  if (hello.version !== PROTOCOL_VERSION) return `protocol version ${hello.version} is not supported (this node speaks ${PROTOCOL_VERSION})`;
  if (hello.cluster !== me.cluster) return `cluster id ${JSON.stringify(hello.cluster)} is not this cluster (${JSON.stringify(me.cluster)})`;
  if (hello.replica === me.replica) return `replica id ${hello.replica} is this node's own`;
  return null;
}

/**
 * The next message of `kind`; election messages, which may come on any link
 * in either direction once it is past the handshake, go to `onRaft` on the way.
 */
async function expect<K extends PeerMessage['kind'], A extends PeerMessage['kind'] = K>(link: Link, kind: K, timeoutMs?: number, onRaft?: (message: ElectionMessage) => void, also: readonly A[] = []): Promise<PeerMessage & { kind: K | A }> {
  let message = await link.next(timeoutMs);
  while (message.kind === 'raft' && onRaft !== undefined) {
    onRaft(message.message);
    message = await link.next(timeoutMs);
  }
  if (message.kind === 'refuse') {
    // A gap is told to the node (onGap), which says it once: not a warning on every retry.
    link.close(`refused by peer: ${message.reason}`, message.gap === true ? 'debug' : 'warn');
    throw message.gap === true ? new GapRefused(message.reason) : new LinkClosed(`refused by peer: ${message.reason}`);
  }
  if (message.kind !== kind && !(also as readonly string[]).includes(message.kind)) {
    link.close(`expected ${kind}, got ${message.kind}`);
    throw new LinkClosed(`expected ${kind}, got ${message.kind}`);
  }
  return message as PeerMessage & { kind: K | A };
}

/** The relay lacks records the subscriber needs, and the subscriber did not ask for a snapshot. */
class GapRefused extends LinkClosed {
  constructor(readonly reason: string) {
    super(`refused by peer: ${reason}`);
  }
}

function refuse(link: Link, reason: string, gap = false, level: 'debug' | 'info' | 'warn' = 'warn'): never {
  link.send({ kind: 'refuse', reason, ...(gap ? { gap } : {}) });
  link.close(reason, level);
  throw new LinkClosed(reason);
}

export interface RelayOptions {
  readonly identity: PeerIdentity;
  readonly journal: Journal;
  readonly log: Logger;
  /** A subscriber acknowledged holding `vclock` durably in its journal (RFC 0012). */
  readonly onAck: (replica: ReplicaId, vclock: VClock, term: Term) => void;
  /** What to send for a journal record (the node sends a rolled-back TXN of its own as an empty one). */
  readonly outgoing?: (record: JournalRecord) => JournalRecord;
  /** Called as each record is written to a subscriber's socket. */
  readonly onSent?: (record: JournalRecord, subscriber: ReplicaId) => void;
  /** An election message from a subscriber. */
  readonly onRaft?: (from: ReplicaId, message: ElectionMessage) => void;
  /** A subscriber behind this journal's start asked for a snapshot (null: refused). */
  readonly serveSnapshot?: (subscriber: ReplicaId) => SnapshotOffer | null;
  /** Told of each connection the port's guard closes at a cap (metrics). */
  readonly onRefused?: RefusalObserver;
}

/** The relay side: accepts subscribers and streams them the journal. */
export class RelayServer {
  readonly #options: RelayOptions;
  readonly #server: Server;
  readonly #links = new Set<Link>();
  /** Subscribers refused for a gap, told in the log once each (they retry every second). */
  readonly #gapsLogged = new Set<ReplicaId>();
  /** Subscribers past the handshake, by replica: election messages can go back on their link. */
  readonly #subscribers = new Map<ReplicaId, Link>();
  readonly #guard: PortGuard;

  constructor(options: RelayOptions) {
    this.#options = options;
    this.#guard = new PortGuard('peer', options.log, options.onRefused);
    const accept = (socket: Socket): void => {
      const admission = this.#guard.admit(socket);
      if (admission !== null) void this.#serve(socket, admission);
    };
    const tls = options.identity.tls;
    if (tls === undefined) {
      this.#server = createServer(accept);
    } else {
      // A connection counts once its TLS handshake is done; before that, maxConnections and the
      // handshake timeout bound it. A refused certificate is one debug line, not a warning per stranger.
      this.#server = createTlsServer(tls.server, accept);
      this.#server.maxConnections = limits.connectionsMax;
      this.#server.on('tlsClientError', (error) => options.log.debug({ err: error.message }, 'peer TLS handshake refused'));
    }
    this.#server.on('error', (error) => options.log.error({ err: error }, 'peer server error'));
  }

  listen(port: number, host = '127.0.0.1'): Promise<number> {
    return listen(this.#server, port, host);
  }

  async close(): Promise<void> {
    for (const link of this.#links) link.close('node stopping', 'info');
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  /** Send an election message to a subscriber; false when it has no link here. */
  sendRaft(to: ReplicaId, message: ElectionMessage): boolean {
    const link = this.#subscribers.get(to);
    if (link === undefined || link.closeReason !== null) return false;
    link.send({ kind: 'raft', message });
    return true;
  }

  async #serve(socket: Socket, admission: Admission): Promise<void> {
    const link = new Link(socket, this.#options.log);
    this.#links.add(link);
    let subscriber: ReplicaId | null = null;
    try {
      subscriber = await this.#handshake(link);
      link.authenticated();
      admission.authenticated();
      const from = subscriber;
      this.#subscribers.get(from)?.close(`replica ${from} subscribed again`, 'info');
      this.#subscribers.set(from, link);
      const subscribe = await expect(link, 'subscribe', limits.handshakeTimeoutMs, (m) => this.#options.onRaft?.(from, m));
      link.log.info({ subscriber, vclock: subscribe.vclock }, 'subscriber joined');
      const cursor = this.#cursorFor(link, subscriber, subscribe);
      const filter = new RelayFilter({ relay: this.#options.identity.replica, subscriber, delayMs: limits.relayThirdPartyDelayMs, heldMax: limits.relayHeldMax });
      await Promise.all([this.#relay(link, subscriber, cursor.cursor, cursor.offer, filter), this.#readAcks(link, subscriber, filter)]);
    } catch (error) {
      // A journal gap or corruption, a closed link, even a failed assertion while serving this
      // subscriber: this link ends with the reason in the log, and the node goes on.
      if (!(error instanceof LinkClosed)) link.close(`relay failed: ${(error as Error).message}`, error instanceof AssertionFailed ? 'error' : 'warn');
    } finally {
      this.#links.delete(link);
      if (subscriber !== null && this.#subscribers.get(subscriber) === link) this.#subscribers.delete(subscriber);
    }
  }

  async #handshake(link: Link): Promise<ReplicaId> {
    const me = this.#options.identity;
    const mine = nonce();
    link.send({ kind: 'hello', version: PROTOCOL_VERSION, cluster: me.cluster, replica: me.replica, nonce: mine, proof: null });
    const hello = await expect(link, 'hello', limits.handshakeTimeoutMs);
    const wrong = checkHello(me, hello);
    if (wrong !== null) refuse(link, wrong);
    const expected = proof(me.secret, 'subscriber', me.cluster, hello.replica, me.replica, hello.nonce, mine);
    if (hello.proof === null || !proofMatches(expected, hello.proof)) refuse(link, `replica ${hello.replica} did not prove the cluster secret`);
    link.send({ kind: 'welcome', proof: proof(me.secret, 'relay', me.cluster, me.replica, hello.replica, mine, hello.nonce) });
    return hello.replica;
  }

  /**
   * Where the subscriber's stream starts: at its vclock, or, when it is
   * behind this journal's start, at that start after a snapshot (when it
   * asked for one and the node offers it). The cursor is opened before the
   * snapshot is read: it keeps the segments the subscriber needs after it.
   */
  #cursorFor(link: Link, subscriber: ReplicaId, subscribe: PeerMessage & { kind: 'subscribe' }): { cursor: JournalCursor; offer: SnapshotOffer | null } {
    const { journal } = this.#options;
    const oldest = journal.oldestVclock;
    if (subscribe.join !== true && vclockCovers(subscribe.vclock, oldest, { ignoreLocal: true })) return { cursor: journal.cursor(subscribe.vclock, { follow: true }), offer: null };
    const behind = subscribe.join === true ? `replica ${subscriber} is joining the cluster` : `replica ${subscriber} lacks records this node no longer keeps (it holds ${vclockFormat(subscribe.vclock)}; this journal starts at ${vclockFormat(oldest)})`;
    if (!subscribe.snapshot) {
      const first = !this.#gapsLogged.has(subscriber);
      this.#gapsLogged.add(subscriber);
      refuse(link, `${behind}: it must rejoin by snapshot; run qsync rejoin on node ${subscriber}, or set its rejoin setting to auto`, true, first ? 'info' : 'debug');
    }
    this.#gapsLogged.delete(subscriber);
    const offer = this.#options.serveSnapshot?.(subscriber) ?? null;
    if (offer === null) refuse(link, `${behind}, and this node cannot send a snapshot now; another peer may`);
    link.log.info({ subscriber, floor: offer.floor }, 'sending a snapshot: the subscriber is behind this journal\'s start');
    return { cursor: journal.cursor(offer.floor, { follow: true }), offer };
  }

  async #sendSnapshot(link: Link, offer: SnapshotOffer): Promise<void> {
    const { begin, parts } = await offer.begin();
    link.send({ kind: 'snapshot', floor: begin.floor, history: begin.history, tables: begin.tables });
    let sent = 0;
    for await (const part of parts) {
      if (link.closeReason !== null) throw new LinkClosed(link.closeReason);
      if (!link.send({ kind: 'snapshotPart', table: part.table, columns: part.columns, rows: part.rows, count: part.count })) await link.drain();
      sent += 1;
    }
    link.send({ kind: 'snapshotEnd', parts: sent });
    link.log.info({ parts: sent }, 'snapshot sent; the records after it follow');
  }

  /**
   * Stream the journal to a subscriber, as the filter says: this node's
   * records at once, a third node's only if the subscriber has not
   * acknowledged it within the relay delay (core/relay-filter.ts).
   */
  async #relay(link: Link, subscriber: ReplicaId, cursor: JournalCursor, offer: SnapshotOffer | null, filter: RelayFilter): Promise<void> {
    const send = (records: readonly JournalRecord[]): boolean => {
      let written = true;
      for (const record of records) {
        const outgoing = this.#options.outgoing?.(record) ?? record;
        written = link.send({ kind: 'record', record: outgoing }) && written;
        this.#options.onSent?.(outgoing, subscriber);
      }
      return written;
    };
    // Woken when the oldest held record falls due, and only while one is held: an idle link costs nothing.
    let timer: NodeJS.Timeout | null = null;
    const arm = (): void => {
      const dueMs = filter.nextDueMs;
      if (timer !== null || dueMs === null || link.closeReason !== null) return;
      timer = setTimeout(() => {
        timer = null;
        send(filter.due(Date.now()));
        arm();
      }, Math.max(1, dueMs - Date.now()));
    };
    try {
      if (offer !== null) await this.#sendSnapshot(link, offer);
      for await (const record of cursor) {
        if (link.closeReason !== null) break;
        const written = send(filter.offer(record, Date.now()));
        arm();
        if (!written) await link.drain();
      }
    } finally {
      if (timer !== null) clearTimeout(timer);
      await cursor.return();
    }
  }

  async #readAcks(link: Link, subscriber: ReplicaId, filter: RelayFilter): Promise<void> {
    for (;;) {
      const ack = await expect(link, 'ack', undefined, (m) => this.#options.onRaft?.(subscriber, m));
      filter.acked(ack.vclock);
      this.#options.onAck(subscriber, ack.vclock, ack.term);
    }
  }
}

export interface SubscriberOptions {
  readonly identity: PeerIdentity;
  readonly peer: { readonly replica: ReplicaId; readonly host: string; readonly port: number };
  readonly log: Logger;
  /** Where to subscribe from: the node's journal vclock. */
  readonly vclock: () => VClock;
  /**
   * Hand a record to the node, in arrival order; the returned promise
   * resolves once it is durable (or was a duplicate). The
   * subscriber does not wait for it before handing over the next record, so a
   * burst shares one journal fsync; it acknowledges as records complete.
   */
  readonly onRecord: (record: JournalRecord) => Promise<void>;
  /** What to acknowledge: the node's durable vclock (short of records it could not apply) and its term. */
  readonly ack: () => { vclock: VClock; term: Term };
  /** Resolves at the node's next journal flush: the subscriber then acknowledges on this link too (RFC 0012). */
  readonly moved?: () => Promise<void>;
  /** An election message from the peer. */
  readonly onRaft?: (message: ElectionMessage) => void;
  /** Whether to ask for a snapshot should the peer lack records this node needs. */
  readonly takesSnapshot?: () => boolean;
  /** A new node (qsync join): its first sync is a snapshot, whatever its vclock; `wait`: not from this peer, not yet. */
  readonly joining?: () => 'join' | 'wait' | 'no';
  /** The peer lacks records this node needs, and no snapshot was asked for. */
  readonly onGap?: (reason: string) => void;
  /** The peer sends a snapshot: where it goes (null: refused). */
  readonly takeSnapshot?: (begin: SnapshotBegin) => SnapshotSink | null;
  readonly backoffMsMin?: number;
  readonly backoffMsMax?: number;
}

/** The subscriber side of one peer link, reconnecting with backoff until stopped. */
// (A snapshot, when the peer sends one, comes first: #takeSnapshot.)
export class Subscriber {
  readonly #options: SubscriberOptions;
  #stopped = false;
  /** The last connection was refused for a gap: the node says so (onGap), the loop need not warn. */
  #gap = false;
  #link: Link | null = null;
  #running: Promise<void> | null = null;
  /** Why the last connection ended, for status and tests. */
  lastError: string | null = null;
  connected = false;

  constructor(options: SubscriberOptions) {
    this.#options = options;
  }

  start(): void {
    this.#running ??= this.#loop();
  }

  /** Send an election message to the peer; false when not connected past the handshake. */
  sendRaft(message: ElectionMessage): boolean {
    const link = this.#link;
    if (!this.connected || link === null || link.closeReason !== null) return false;
    link.send({ kind: 'raft', message });
    return true;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#link?.close('node stopping', 'info');
    await this.#running;
  }

  async #loop(): Promise<void> {
    const min = this.#options.backoffMsMin ?? 100;
    const max = this.#options.backoffMsMax ?? 1_000;
    let backoff = min;
    while (!this.#stopped) {
      if (this.#options.joining?.() === 'wait') {
        // A node joining takes one snapshot, from one peer: the others wait until it is loaded.
        await new Promise((r) => setTimeout(r, min));
        continue;
      }
      const handshaken = await this.#session().catch((error: unknown) => {
        if (error instanceof AssertionFailed) throw error;
        this.lastError = (error as Error).message; // refused, unreachable, or closed during the handshake
        return false;
      });
      if (this.connected && !this.#stopped && !this.#gap) this.#options.log.warn({ peer: this.#options.peer.replica, reason: this.#link?.closeReason ?? this.lastError }, `peer ${this.#options.peer.replica} lost; reconnecting`);
      this.connected = false;
      if (this.#stopped) break;
      backoff = handshaken ? min : Math.min(max, backoff * 2);
      await new Promise((r) => setTimeout(r, backoff));
    }
  }

  /** Hand a snapshot's parts to the node in order; a failure ends the link, and the load is undone. */
  async #takeSnapshot(link: Link, begin: PeerMessage & { kind: 'snapshot' }): Promise<void> {
    const sink = this.#options.takeSnapshot?.({ floor: begin.floor, history: begin.history, tables: begin.tables }) ?? null;
    if (sink === null) {
      link.close('a snapshot arrived while this node takes one from another peer', 'info');
      throw new LinkClosed('snapshot refused');
    }
    let parts = 0;
    try {
      for (;;) {
        const message = await expect(link, 'snapshotPart', undefined, this.#options.onRaft, ['snapshotEnd']);
        if (message.kind === 'snapshotEnd') {
          if (message.parts !== parts) throw new Error(`the snapshot announced ${message.parts} parts and ${parts} arrived`);
          await sink.end(parts);
          return;
        }
        await sink.part(message);
        parts += 1;
      }
    } catch (error) {
      await sink.abort((error as Error).message);
      throw error;
    }
  }

  /** One connection: resolves true when it got past the handshake. */
  async #session(): Promise<boolean> {
    const { identity: me, peer, log } = this.#options;
    const socket = me.tls === undefined ? connect({ host: peer.host, port: peer.port }) : tlsConnect({ host: peer.host, port: peer.port, ...me.tls.client });
    const link = new Link(socket, log.child({ link: `subscriber->${peer.replica}` }));
    this.#link = link;
    const hello = await expect(link, 'hello', limits.handshakeTimeoutMs);
    const wrong = checkHello(me, hello) ?? (hello.replica === peer.replica ? null : `expected replica ${peer.replica} at ${peer.host}:${peer.port}, found replica ${hello.replica}`);
    if (wrong !== null) refuse(link, wrong);
    const mine = nonce();
    link.send({ kind: 'hello', version: PROTOCOL_VERSION, cluster: me.cluster, replica: me.replica, nonce: mine, proof: proof(me.secret, 'subscriber', me.cluster, me.replica, peer.replica, mine, hello.nonce) });
    const welcome = await expect(link, 'welcome', limits.handshakeTimeoutMs);
    if (!proofMatches(proof(me.secret, 'relay', me.cluster, peer.replica, me.replica, hello.nonce, mine), welcome.proof)) {
      refuse(link, `replica ${peer.replica} did not prove the cluster secret`);
    }
    link.authenticated();
    this.connected = true;
    this.lastError = null;
    this.#gap = false;
    log.info({ peer: peer.replica, address: `${peer.host}:${peer.port}` }, `peer ${peer.replica} connected`);
    const joining = this.#options.joining?.() ?? 'no';
    if (joining === 'wait') {
      link.close('joining: another peer\'s snapshot is asked for', 'debug');
      throw new LinkClosed('joining: another peer\'s snapshot is asked for');
    }
    const join = joining === 'join';
    link.send({ kind: 'subscribe', vclock: this.#options.vclock(), snapshot: join || (this.#options.takesSnapshot?.() ?? false), ...(join ? { join } : {}) });
    let outstanding = 0;
    /** Bytes of the records handed over and not yet done: the journal's queue of what is not yet durable is bounded too. */
    let outstandingBytes = 0;
    let ackPending = false;
    let failure: Error | null = null;
    /** The last ack sent on this link, and when. */
    let acked: { vclock: VClock; atMs: number } = { vclock: [], atMs: 0 };
    const sendAck = (): void => {
      const ack = this.#options.ack();
      acked = { vclock: ack.vclock, atMs: Date.now() };
      link.send({ kind: 'ack', ...ack });
    };
    const completed = (bytes: number): void => {
      outstanding -= 1;
      outstandingBytes -= bytes;
      if (ackPending) return;
      ackPending = true;
      // One ack covers every record completed in this turn of the event loop.
      setImmediate(() => {
        ackPending = false;
        sendAck();
      });
    };
    // Records from other links move this node's vclock too: tell the relay soon when it changed (a relay
    // sends a third node's record only if this node has not acknowledged it: RFC 0012), and every second
    // anyway, so that every node (not only the leader, which hears heartbeat replies) knows what each peer
    // holds and when it last heard from it (lag, status). An ack is always true: what is durable here.
    const refresh = setInterval(() => {
      if (Date.now() - acked.atMs >= ACK_REFRESH_MS) sendAck();
    }, ACK_REFRESH_MS);
    // Woken by the journal's flushes (records from any link, or this node's own), not by a timer: idle, nothing runs.
    void (async () => {
      while (link.closeReason === null && this.#options.moved !== undefined) {
        await this.#options.moved();
        await new Promise((resolve) => setTimeout(resolve, ACK_CHANGED_MS));
        if (link.closeReason === null && vclockCompare(this.#options.ack().vclock, acked.vclock) !== 'equal') sendAck();
      }
    })();
    try {
      for (let first = true; ; first = false) {
        const message = await expect(link, 'record', undefined, this.#options.onRaft, first ? ['snapshot' as const] : []);
        if (message.kind === 'snapshot') {
          await this.#takeSnapshot(link, message);
          continue;
        }
        if (failure !== null) throw failure;
        const bytes = recordBytes(message.record);
        outstanding += 1;
        outstandingBytes += bytes;
        const done = this.#options.onRecord(message.record);
        done.then(() => completed(bytes), (error: Error) => {
          failure = error;
          link.close(`applying a record from replica ${peer.replica} failed: ${error.message}`);
        });
        // Records complete in order: waiting for this one waits for every one before it.
        if (outstanding >= limits.linkQueueMessagesMax || outstandingBytes >= limits.peerInFlightBytesMax) await done.catch(() => undefined);
      }
    } catch (error) {
      this.#gap = error instanceof GapRefused;
      if (error instanceof GapRefused) this.#options.onGap?.(error.reason);
      if (error instanceof LinkClosed) return true;
      if (error instanceof AssertionFailed) throw error;
      link.close(`applying a record from replica ${peer.replica} failed: ${(error as Error).message}`);
      this.lastError = (error as Error).message;
      return true;
    } finally {
      clearInterval(refresh);
    }
  }
}
