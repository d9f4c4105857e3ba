// The peer network over TCP (sidecar/io.ts Transport): one relay server that
// streams this journal to every subscriber, and one subscriber per peer.
// Election messages go on whichever link to the peer is up.
import type { ElectionMessage } from '../core/election.js';
import type { ReplicaId } from '../core/types.js';
import type { Journal } from '../journal/index.js';
import type { Logger } from '../log.js';
import type { Transport, TransportHandlers } from '../sidecar/io.js';
import { RelayServer, Subscriber, type PeerIdentity } from './peer.js';

export interface TcpTransportOptions {
  readonly identity: PeerIdentity;
  readonly journal: Journal;
  readonly log: Logger;
  readonly listen: { readonly host: string; readonly port: number };
  readonly peers: ReadonlyArray<{ readonly replica: number; readonly host: string; readonly port: number }>;
}

export class TcpTransport implements Transport {
  readonly #options: TcpTransportOptions;
  #relay: RelayServer | null = null;
  readonly #subscribers = new Map<ReplicaId, Subscriber>();

  constructor(options: TcpTransportOptions) {
    this.#options = options;
  }

  async start(handlers: TransportHandlers): Promise<void> {
    const { identity, journal, log, listen, peers } = this.#options;
    this.#relay = new RelayServer({
      identity, journal, log,
      onAck: handlers.onAck, outgoing: handlers.outgoing, onRaft: handlers.onRaft, onSent: handlers.onSent, serveSnapshot: handlers.serveSnapshot,
    });
    await this.#relay.listen(listen.port, listen.host);
    for (const peer of peers) {
      const replica = peer.replica as ReplicaId;
      this.#subscribers.set(replica, new Subscriber({
        identity, peer: { replica, host: peer.host, port: peer.port }, log,
        vclock: handlers.subscribeFrom, onRecord: handlers.onRecord, ack: handlers.ack,
        onRaft: (message) => handlers.onRaft(replica, message),
        takesSnapshot: handlers.takesSnapshot,
        onGap: (reason) => handlers.onGap(replica, reason),
        takeSnapshot: (begin) => handlers.takeSnapshot(replica, begin),
      }));
    }
    for (const subscriber of this.#subscribers.values()) subscriber.start();
  }

  /** On whichever link to the peer is up: our subscription to it, or its subscription to us. */
  sendRaft(to: ReplicaId, message: ElectionMessage): void {
    if (this.#subscribers.get(to)?.sendRaft(message) === true) return;
    this.#relay?.sendRaft(to, message);
  }

  connected(replica: ReplicaId): boolean {
    return this.#subscribers.get(replica)?.connected ?? false;
  }

  async stop(): Promise<void> {
    await Promise.all([...this.#subscribers.values()].map((s) => s.stop()));
    await this.#relay?.close();
  }
}
