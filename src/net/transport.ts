// The peer network over TCP (sidecar/io.ts Transport): one relay server that
// streams this journal to every subscriber, and one subscriber per peer.
// Election messages go on whichever link to the peer is up.
import { splitAddress } from '../core/address.js';
import type { ElectionMessage } from '../core/election.js';
import type { Member } from '../core/record.js';
import type { ReplicaId } from '../core/types.js';
import type { Journal } from '../journal/index.js';
import type { Logger } from '../log.js';
import type { Transport, TransportHandlers } from '../sidecar/io.js';
import type { RefusalObserver } from './guard.js';
import { RelayServer, Subscriber, type PeerIdentity } from './peer.js';

export interface TcpTransportOptions {
  readonly identity: PeerIdentity;
  readonly journal: Journal;
  readonly log: Logger;
  readonly listen: { readonly host: string; readonly port: number };
  readonly peers: ReadonlyArray<{ readonly replica: number; readonly host: string; readonly port: number }>;
  /** Told of each connection the peer port's guard closes at a cap (metrics). */
  readonly onRefused?: RefusalObserver;
}

type PeerAddress = TcpTransportOptions['peers'][number];

export class TcpTransport implements Transport {
  readonly #options: TcpTransportOptions;
  #relay: RelayServer | null = null;
  #peers: readonly PeerAddress[];
  #handlers: TransportHandlers | null = null;
  readonly #subscribers = new Map<ReplicaId, { readonly subscriber: Subscriber; readonly address: string }>();

  constructor(options: TcpTransportOptions) {
    this.#options = options;
    this.#peers = options.peers;
  }

  async start(handlers: TransportHandlers): Promise<void> {
    const { identity, journal, log, listen } = this.#options;
    this.#handlers = handlers;
    this.#relay = new RelayServer({
      identity, journal, log,
      onAck: handlers.onAck, outgoing: handlers.outgoing, onRaft: handlers.onRaft, onSent: handlers.onSent, serveSnapshot: handlers.serveSnapshot,
      ...(this.#options.onRefused === undefined ? {} : { onRefused: this.#options.onRefused }),
    });
    await this.#relay.listen(listen.port, listen.host);
    this.#follow();
  }

  /**
   * Subscribe to each peer in the list that has no link yet (or moved), stop
   * the links to the others. The relay keeps serving any node that proves
   * the secret: a removed node still hears the records that removed it.
   */
  setPeers(peers: readonly Member[]): void {
    this.#peers = peers.map((m) => ({ replica: m.replica, ...splitAddress(m.address) }));
    if (this.#handlers !== null) this.#follow();
  }

  #follow(): void {
    const handlers = this.#handlers as TransportHandlers;
    const { identity, log } = this.#options;
    const wanted = new Map(this.#peers.map((p) => [p.replica as ReplicaId, p]));
    for (const [replica, { subscriber, address }] of this.#subscribers) {
      const peer = wanted.get(replica);
      if (peer !== undefined && `${peer.host}:${peer.port}` === address) continue;
      this.#subscribers.delete(replica);
      void subscriber.stop();
    }
    for (const [replica, peer] of wanted) {
      if (this.#subscribers.has(replica)) continue;
      const subscriber = new Subscriber({
        identity, peer: { replica, host: peer.host, port: peer.port }, log,
        vclock: handlers.subscribeFrom, onRecord: handlers.onRecord, ack: handlers.ack, moved: () => this.#options.journal.waitForDurable(),
        onRaft: (message) => handlers.onRaft(replica, message),
        takesSnapshot: handlers.takesSnapshot,
        joining: () => handlers.joining(replica),
        onGap: (reason) => handlers.onGap(replica, reason),
        takeSnapshot: (begin) => handlers.takeSnapshot(replica, begin),
      });
      this.#subscribers.set(replica, { subscriber, address: `${peer.host}:${peer.port}` });
      subscriber.start();
    }
  }

  /** On whichever link to the peer is up: our subscription to it, or its subscription to us. */
  sendRaft(to: ReplicaId, message: ElectionMessage): void {
    if (this.#subscribers.get(to)?.subscriber.sendRaft(message) === true) return;
    this.#relay?.sendRaft(to, message);
  }

  connected(replica: ReplicaId): boolean {
    return this.#subscribers.get(replica)?.subscriber.connected ?? false;
  }

  async stop(): Promise<void> {
    this.#handlers = null;
    await Promise.all([...this.#subscribers.values()].map((s) => s.subscriber.stop()));
    await this.#relay?.close();
  }
}
