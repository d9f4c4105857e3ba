// What one SQL-front client has sent and the front has not yet handled: its
// startup packet, then its typed messages, each checked against the phase's
// size limit as soon as its header is in. The messages are queued in order
// (the session looks ahead within a pipeline before it runs it); past a
// bound of queued bytes the socket is paused until the session catches up.
// COPY data sent while nothing is queued goes straight on, since the
// statement it belongs to is running.
import type { Socket } from 'node:net';
import { Frames, WireError, type Message } from './wire.js';

/** Bytes of messages queued before the client's socket is paused. */
export const INBOX_QUEUED_BYTES_MAX = 1024 * 1024;

/** Bytes a client may send ahead while its startup packet and authentication are handled. */
const UNPARSED_STARTUP_BYTES_MAX = 16 * 1024;

const COPY_TYPES = new Set(['d'.charCodeAt(0), 'c'.charCodeAt(0), 'f'.charCodeAt(0)]);

export class Inbox {
  readonly #socket: Socket;
  readonly #frames = new Frames('client');
  readonly #queue: Message[] = [];
  #queuedBytes = 0;
  #paused = false;
  #ended = false;
  #failure: Error | null = null;
  #waiter: (() => void) | null = null;
  /** Typed messages from here on, at most this size; null while in the startup phase. */
  #messageBytesMax: number | null = null;
  /** Where COPY data goes when nothing is queued ahead of it. */
  direct: ((m: Message) => void) | null = null;

  /** `initial`: bytes already read from the socket (the first packet, read before TLS was decided). */
  constructor(socket: Socket, initial?: Buffer) {
    this.#socket = socket;
    if (initial !== undefined && initial.length > 0) this.#frames.push(initial);
    socket.on('data', (chunk: Buffer) => {
      this.#frames.push(chunk);
      this.#parse();
      // What is not yet a whole message stays within the phase's bound; before the phase's
      // size is known (while the startup packet is handled), within a small one.
      if (this.#failure === null && this.#frames.pending > (this.#messageBytesMax ?? UNPARSED_STARTUP_BYTES_MAX) + chunk.length) {
        this.#fail(new WireError('08P01', `the client sent ${this.#frames.pending} bytes the front has not yet read`));
      }
      this.#wake();
    });
    socket.on('close', () => {
      this.#ended = true;
      this.#wake();
    });
  }

  /** Switch to typed messages of at most `bytesMax` bytes (after the startup packet, and again after authentication). */
  messages(bytesMax: number): void {
    this.#messageBytesMax = bytesMax;
    this.#parse();
  }

  /** The startup packet's body, or null when the client went away. */
  async startup(bytesMax: number): Promise<Buffer | null> {
    for (;;) {
      const body = this.#frames.startup(bytesMax);
      if (body !== null) return body;
      if (this.#failure !== null) throw this.#failure;
      if (this.#ended) return null;
      await this.#wait();
    }
  }

  /** The next typed message if one is queued, without waiting; else null. */
  take(): Message | null {
    const m = this.#queue.shift();
    if (m === undefined) return null;
    this.#queuedBytes -= m.end - m.start;
    if (this.#paused && this.#queuedBytes < INBOX_QUEUED_BYTES_MAX / 2) {
      this.#paused = false;
      this.#socket.resume();
    }
    return m;
  }

  /** The next typed message, or null when the client went away. Throws a WireError for a frame out of bounds. */
  async next(): Promise<Message | null> {
    for (;;) {
      const m = this.take();
      if (m !== null) return m;
      if (this.#failure !== null) throw this.#failure;
      if (this.#ended) return null;
      await this.#wait();
    }
  }

  /** Messages received and not yet taken, in order: the rest of a pipeline, for looking ahead. */
  get queued(): readonly Message[] {
    return this.#queue;
  }

  #parse(): void {
    const bytesMax = this.#messageBytesMax;
    if (bytesMax === null || this.#failure !== null) return;
    try {
      for (let m = this.#frames.message(bytesMax); m !== null; m = this.#frames.message(bytesMax)) {
        if (this.#queue.length === 0 && this.direct !== null && COPY_TYPES.has(m.type)) {
          this.direct(m);
          continue;
        }
        this.#queue.push(m);
        this.#queuedBytes += m.end - m.start;
      }
    } catch (error) {
      this.#fail(error as Error);
    }
    if (!this.#paused && this.#queuedBytes > INBOX_QUEUED_BYTES_MAX) {
      this.#paused = true;
      this.#socket.pause();
    }
  }

  /** Nothing more is read: the session answers the failure and closes. */
  #fail(error: Error): void {
    this.#failure = error;
    this.#socket.pause();
  }

  #wait(): Promise<void> {
    return new Promise((resolve) => (this.#waiter = resolve));
  }

  #wake(): void {
    const waiter = this.#waiter;
    this.#waiter = null;
    waiter?.();
  }
}
