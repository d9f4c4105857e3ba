// A TCP proxy on one peer link, for partitions: while cut, it closes every
// connection through it and accepts none (the nodes see a dead network, not
// a refusal). Drills and the end-to-end tests put one in front of each
// directed link (node i's connection to node j).
import { connect, createServer, type Server, type Socket } from 'node:net';
import { listen } from '../net/listen.js';

export class LinkProxy {
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  /** The connecting side of each open connection (the node that dialled). */
  readonly #inbound = new Set<Socket>();
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
      this.#inbound.add(inbound);
      inbound.on('close', () => this.#inbound.delete(inbound));
      for (const [a, b] of [[inbound, outbound], [outbound, inbound]] as const) {
        this.#sockets.add(a);
        a.on('error', () => b.destroy());
        a.on('close', () => {
          this.#sockets.delete(a);
          b.destroy();
        });
        a.pipe(b);
      }
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
   * Write raw bytes to the dialling node, as if the far side sent them (a
   * forged frame). Meant for a quiet link: bytes land between the far side's
   * writes, which could split one of its frames. Returns the connections hit.
   */
  inject(bytes: Uint8Array): number {
    for (const socket of this.#inbound) socket.write(bytes);
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
