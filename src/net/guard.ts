// Admission to a port that strangers can reach (the peer and client ports):
// a cap on the connections it holds, a smaller one on those not yet
// authenticated, in all and per remote address, so that idle or half-open
// connections cannot crowd out peers and clients; and, for logins that cost a
// PostgreSQL connection each, a bound on how many run at once and a backoff
// per address after a failure, so that a flood of wrong passwords cannot
// exhaust PostgreSQL's connection slots.
//
// A refused connection is closed at once; refusals are logged as a count
// every few seconds, not one line each, so a flood cannot fill the disk.
import type { Socket } from 'node:net';
import { QsyncError } from '../core/errors.js';
import { limits } from '../core/limits.js';
import type { Logger } from '../log.js';

/** How often refused connections are summed up in the log. */
const REFUSALS_LOG_EVERY_MS = 5_000;

/** Told of each refusal, for metrics: a connection closed at a cap, or a failed login. */
export type RefusalObserver = (port: string, reason: 'cap' | 'login') => void;

/** What a port holds at most: connections, those not yet authenticated, and those from one address. */
export interface PortCaps {
  readonly connectionsMax: number;
  readonly unauthenticatedMax: number;
  readonly unauthenticatedPerAddressMax: number;
}

const DEFAULT_CAPS: PortCaps = limits;

export interface Admission {
  /** The connection proved who it is: it no longer counts as unauthenticated. */
  authenticated(): void;
}

export class PortGuard {
  readonly #port: string;
  readonly #log: Logger;
  #connections = 0;
  #unauthenticated = 0;
  readonly #unauthenticatedBy = new Map<string, number>();
  #refused = 0;
  #refusedLoggedAt = 0;

  readonly #observe: RefusalObserver;
  readonly #caps: PortCaps;

  constructor(port: string, log: Logger, observe: RefusalObserver = () => undefined, caps: PortCaps = DEFAULT_CAPS) {
    this.#port = port;
    this.#log = log;
    this.#observe = observe;
    this.#caps = caps;
  }

  /** Take a new connection in, or close it at once (null) when a cap is reached. */
  admit(socket: Socket): Admission | null {
    const address = socket.remoteAddress ?? 'unknown';
    const fromAddress = this.#unauthenticatedBy.get(address) ?? 0;
    const caps = this.#caps;
    const full = this.#connections >= caps.connectionsMax ? `${caps.connectionsMax} connections`
      : this.#unauthenticated >= caps.unauthenticatedMax ? `${caps.unauthenticatedMax} connections not yet authenticated`
        : fromAddress >= caps.unauthenticatedPerAddressMax ? `${caps.unauthenticatedPerAddressMax} connections not yet authenticated from ${address}`
          : null;
    if (full !== null) {
      socket.on('error', () => undefined);
      socket.destroy();
      this.#refusedOne(full);
      return null;
    }
    this.#connections += 1;
    this.#unauthenticated += 1;
    this.#unauthenticatedBy.set(address, fromAddress + 1);
    let pending = true;
    const leaveUnauthenticated = (): void => {
      if (!pending) return;
      pending = false;
      this.#unauthenticated -= 1;
      const left = (this.#unauthenticatedBy.get(address) ?? 1) - 1;
      if (left === 0) this.#unauthenticatedBy.delete(address);
      else this.#unauthenticatedBy.set(address, left);
    };
    socket.once('close', () => {
      leaveUnauthenticated();
      this.#connections -= 1;
    });
    return { authenticated: leaveUnauthenticated };
  }

  #refusedOne(why: string): void {
    this.#observe(this.#port, 'cap');
    this.#refused += 1;
    const now = Date.now();
    if (now - this.#refusedLoggedAt < REFUSALS_LOG_EVERY_MS) return;
    this.#log.warn({ port: this.#port, refused: this.#refused, connections: this.#connections, unauthenticated: this.#unauthenticated }, `${this.#port} port: connections refused: it holds ${why} already (the count is since the last such line)`);
    this.#refused = 0;
    this.#refusedLoggedAt = now;
  }
}

/** A failed login, as the gate counts it: the handler's refusal of the credentials. */
function isRefusal(error: unknown): boolean {
  return error instanceof QsyncError && error.code === 'AUTH';
}

/**
 * Logins one at a time per slot: at most `concurrent` at once, and after a
 * failure from an address, the next login from it waits (doubling up to the
 * backoff's maximum) before it is even tried. Together with the cap on
 * unauthenticated connections per address, a flood of wrong passwords costs
 * PostgreSQL at most `concurrent` logins at a time.
 */
export class AuthGate {
  readonly #concurrent: number;
  #running = 0;
  readonly #waiting: Array<() => void> = [];
  /** Failed logins per address: how many in a row, and until when the next waits. */
  readonly #failures = new Map<string, { count: number; untilMs: number }>();

  readonly #observe: RefusalObserver;

  constructor(observe: RefusalObserver = () => undefined, concurrent: number = limits.authConcurrentMax) {
    this.#observe = observe;
    this.#concurrent = concurrent;
  }

  async run<T>(address: string, login: () => Promise<T>): Promise<T> {
    const failed = this.#failures.get(address);
    const waitMs = failed === undefined ? 0 : failed.untilMs - Date.now();
    if (waitMs > 0) await new Promise((resolve) => setTimeout(resolve, waitMs));
    if (this.#running >= this.#concurrent) await new Promise<void>((resolve) => this.#waiting.push(resolve));
    this.#running += 1;
    try {
      const done = await login();
      this.#failures.delete(address);
      return done;
    } catch (error) {
      if (isRefusal(error)) {
        this.#failed(address);
        this.#observe('client', 'login');
      }
      throw error;
    } finally {
      this.#running -= 1;
      this.#waiting.shift()?.();
    }
  }

  #failed(address: string): void {
    const [first, max] = limits.authBackoffMs;
    const count = (this.#failures.get(address)?.count ?? 0) + 1;
    this.#failures.delete(address); // re-inserted last: the map's order is the order to forget in
    this.#failures.set(address, { count, untilMs: Date.now() + Math.min(max, first * 2 ** Math.min(count - 1, 16)) });
    if (this.#failures.size > limits.authAddressesMax) this.#failures.delete(this.#failures.keys().next().value as string);
  }
}
