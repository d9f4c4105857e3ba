// A TCP proxy on one directed peer link (node i's connection to node j), for
// drills and the end-to-end tests: the machines cannot be trusted to let
// iptables cut a cluster's own loopback traffic, so partitions happen here.
//
//   none       bytes pass both ways
//   drop       every connection is reset and new ones refused (a dead host
//              answering with RST)
//   blackhole  connections stay open but bytes stop, in one direction or
//              both; held bytes are never discarded (TCP does not lose
//              bytes), and on heal a connection that was held is reset, as
//              TCP gives up on a long silence
//   delay      each chunk is forwarded `ms` later, in order
//
// `forward` is the dialling node's traffic to the dialled one; `backward` the
// answer.
import { connect, createServer, type Server, type Socket } from 'node:net';
import { listen } from '../net/listen.js';

export type LinkFault =
  | { readonly kind: 'none' }
  | { readonly kind: 'drop' }
  | { readonly kind: 'blackhole'; readonly direction: 'both' | 'forward' | 'backward' }
  | { readonly kind: 'delay'; readonly ms: number };

interface Pair {
  readonly inbound: Socket;
  readonly outbound: Socket;
  /** Bytes were held on this connection: reset it on heal. */
  held: boolean;
}

export class LinkProxy {
  readonly #server: Server;
  readonly #pairs = new Set<Pair>();
  #fault: LinkFault = { kind: 'none' };
  port = 0;

  /** `target` is read at each connection: the port behind may change (a restarted cluster). */
  constructor(target: () => { host: string; port: number }) {
    this.#server = createServer((inbound) => {
      if (this.#fault.kind === 'drop') {
        inbound.destroy();
        return;
      }
      const pair: Pair = { inbound, outbound: connect(target()), held: false };
      this.#pairs.add(pair);
      for (const [from, to, direction] of [[pair.inbound, pair.outbound, 'forward'], [pair.outbound, pair.inbound, 'backward']] as const) {
        from.on('error', () => to.destroy());
        from.on('close', () => {
          this.#pairs.delete(pair);
          to.destroy();
        });
        from.on('data', (chunk: Buffer) => {
          const fault = this.#fault;
          if (fault.kind === 'delay') {
            setTimeout(() => to.write(chunk), fault.ms);
            return;
          }
          to.write(chunk);
          if (this.#holds(direction)) this.#hold(pair);
        });
      }
      if (this.#fault.kind === 'blackhole') this.#hold(pair);
    });
  }

  async listen(host = '127.0.0.1'): Promise<number> {
    this.port = await listen(this.#server, 0, host);
    return this.port;
  }

  /** Connections open through this proxy now. */
  get connections(): number {
    return this.#pairs.size;
  }

  /** Set the link's fault; `none` heals it. */
  set(fault: LinkFault): void {
    if (fault.kind === 'delay' && !(Number.isFinite(fault.ms) && fault.ms >= 0)) throw new RangeError(`a link delay must be a number of ms >= 0, got ${fault.ms}`);
    const wasHeld = this.#fault.kind === 'blackhole';
    this.#fault = fault;
    if (fault.kind === 'drop') {
      for (const pair of this.#pairs) pair.inbound.destroy();
      return;
    }
    for (const pair of this.#pairs) {
      if (fault.kind === 'blackhole') this.#hold(pair);
      else if (wasHeld && pair.held) pair.inbound.destroy();
    }
  }

  /** Reset every connection and refuse new ones until heal(). */
  cut(): void {
    this.set({ kind: 'drop' });
  }

  heal(): void {
    this.set({ kind: 'none' });
  }

  close(): Promise<void> {
    this.cut();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }

  #holds(direction: 'forward' | 'backward'): boolean {
    const fault = this.#fault;
    return fault.kind === 'blackhole' && (fault.direction === 'both' || fault.direction === direction);
  }

  /** Stop reading the held directions: their bytes wait in the kernel's buffers, as unacknowledged TCP segments do. */
  #hold(pair: Pair): void {
    if (this.#holds('forward')) pair.inbound.pause();
    if (this.#holds('backward')) pair.outbound.pause();
    pair.held = true;
  }
}
