// A TCP proxy on one peer link, for partitions: while cut, it closes every
// connection through it and accepts none (the nodes see a dead network, not
// a refusal). Drills and the end-to-end tests put one in front of each
// directed link (node i's connection to node j).
import { connect, createServer, type Server, type Socket } from 'node:net';
import { FRAME_HEADER_BYTES } from '../journal/frame.js';
import { listen } from '../net/listen.js';

/** One connection's traffic toward the dialling node: an incomplete frame held back, forged frames waiting. */
interface Downstream {
  readonly socket: Socket;
  partial: Buffer;
  injected: Uint8Array[];
}

/** Write forged frames while no real frame is half sent. */
function flush(downstream: Downstream): void {
  if (downstream.partial.length > 0) return;
  for (const frame of downstream.injected) downstream.socket.write(frame);
  downstream.injected = [];
}

export class LinkProxy {
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  /** The connecting side of each open connection (the node that dialled). */
  readonly #inbound = new Set<Downstream>();
  #cut = false;
  port = 0;

  /** `target` is read at each connection: the port behind may change (a restarted cluster). */
  constructor(target: () => { host: string; port: number }) {
    this.#server = createServer((inbound) => {
      if (this.#cut) {
        inbound.destroy();
        return;
      }
      const outbound = connect(target());
      const downstream: Downstream = { socket: inbound, partial: Buffer.alloc(0), injected: [] };
      this.#inbound.add(downstream);
      inbound.on('close', () => this.#inbound.delete(downstream));
      for (const [a, b] of [[inbound, outbound], [outbound, inbound]] as const) {
        this.#sockets.add(a);
        a.on('error', () => b.destroy());
        a.on('close', () => {
          this.#sockets.delete(a);
          b.destroy();
        });
      }
      inbound.pipe(outbound);
      // Toward the dialling node, whole frames at a time, so a forged frame lands between two real ones.
      outbound.on('data', (chunk: Buffer) => {
        downstream.partial = Buffer.concat([downstream.partial, chunk]);
        let at = 0;
        while (downstream.partial.length - at >= FRAME_HEADER_BYTES) {
          const total = FRAME_HEADER_BYTES + downstream.partial.readUInt32BE(at);
          if (downstream.partial.length - at < total) break;
          at += total;
        }
        if (at > 0) inbound.write(downstream.partial.subarray(0, at));
        downstream.partial = downstream.partial.subarray(at);
        flush(downstream);
      });
    });
  }

  async listen(host = '127.0.0.1'): Promise<number> {
    this.port = await listen(this.#server, 0, host);
    return this.port;
  }

  /** Connections open through this proxy now. */
  get connections(): number {
    return this.#inbound.size;
  }

  get isCut(): boolean {
    return this.#cut;
  }

  /** Drop every connection and refuse new ones until heal(). */
  cut(): void {
    this.#cut = true;
    for (const socket of this.#sockets) socket.destroy();
  }

  /**
   * Send a frame to the dialling node as if the far side sent it (a forgery),
   * between two of the far side's frames. Returns the connections hit.
   */
  inject(bytes: Uint8Array): number {
    for (const downstream of this.#inbound) {
      downstream.injected.push(bytes);
      flush(downstream);
    }
    return this.#inbound.size;
  }

  heal(): void {
    this.#cut = false;
  }

  close(): Promise<void> {
    this.cut();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}
