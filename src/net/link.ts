// A framed message connection over one TCP socket. Frames are the journal's
// (`u32 length | u32 crc32 | msgpack`), bounded by limits.frameBytesMax before
// anything is buffered for them. Anything malformed or oversized closes the
// link with a logged reason: nothing a peer sends can throw out of here.
//
// Messages are read with next(), in order. When the reader falls behind, the
// socket is paused, so a fast sender cannot grow memory without bound.
//
// A link that serves strangers starts unauthenticated: it accepts at most
// limits.handshakeBytesMax bytes in all, and no frame larger, until its owner
// calls authenticated(). Any exception while reading closes the link, never
// the process.
import type { Socket } from 'node:net';
import { QsyncError } from '../core/errors.js';
import { limits } from '../core/limits.js';
import type { RecordInvalid } from '../core/errors.js';
import { decodeMessage, encodeMessage, type PeerMessage } from '../core/messages.js';
import { encodeFrame, readFrame } from '../journal/frame.js';
import type { Logger } from '../log.js';

/** The close reason of a link whose other side ended the connection. */
export const PEER_CLOSED = 'connection closed by the other side';

export class LinkClosed extends QsyncError<'LINK_CLOSED'> {
  constructor(reason: string) {
    super('LINK_CLOSED', `link closed: ${reason}`, { reason });
  }
}

/** How a link turns bodies into messages and back; decode never throws. */
export interface LinkCodec<In, Out> {
  decode(body: Uint8Array): { ok: true; message: In } | { ok: false; error: RecordInvalid };
  encode(message: Out): Uint8Array;
}

const peerCodec: LinkCodec<PeerMessage, PeerMessage> = {
  decode: (body) => {
    const result = decodeMessage(body);
    return result.ok ? { ok: true, message: result.message } : result;
  },
  encode: encodeMessage,
};

export interface LinkOptions {
  /** Bound the bytes read until authenticated() (a server's side, or a client of a peer not yet proven). */
  readonly handshake?: boolean;
}

export class FramedLink<In, Out> {
  readonly socket: Socket;
  readonly log: Logger;
  readonly #codec: LinkCodec<In, Out>;
  #buffer: Buffer = Buffer.alloc(0);
  /** Chunks after #buffer while the frame they belong to is incomplete, and the bytes that frame needs from #buffer's start (0: not known). */
  #later: Buffer[] = [];
  #laterBytes = 0;
  #needed = 0;
  /** Bytes this link may still receive before it authenticates; null once authenticated (or never bounded). */
  #handshakeBytesLeft: number | null;
  #frameBytesMax: number;
  #queue: In[] = [];
  #waiter: { resolve: (m: In) => void; reject: (e: Error) => void } | null = null;
  #closeReason: string | null = null;
  /** Writes of this turn are held in the socket and leave together at the next tick. */
  #corked = false;

  constructor(socket: Socket, log: Logger, codec: LinkCodec<In, Out>, options: LinkOptions = {}) {
    this.socket = socket;
    this.#codec = codec;
    this.#handshakeBytesLeft = options.handshake === true ? limits.handshakeBytesMax : null;
    this.#frameBytesMax = options.handshake === true ? limits.handshakeBytesMax : limits.frameBytesMax;
    // An outgoing socket has no remote address until it connects.
    this.log = socket.remoteAddress === undefined ? log : log.child({ peer: `${socket.remoteAddress}:${socket.remotePort}` });
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.#receive(chunk));
    // Ordinary ends are debug lines: a peer lost is its own info line (peer.ts), and clients come and go.
    // A reset is the other side closing too (a port's guard destroys a connection it refuses at a cap).
    socket.on('error', (error) => this.close((error as NodeJS.ErrnoException).code === 'ECONNRESET' ? PEER_CLOSED : `socket error: ${error.message}`, 'debug'));
    socket.on('close', () => this.close(PEER_CLOSED, 'debug'));
  }

  /** The other side proved who it is: frames up to limits.frameBytesMax from now on. */
  authenticated(): void {
    this.#handshakeBytesLeft = null;
    this.#frameBytesMax = limits.frameBytesMax;
  }

  /** Messages received and not yet read. */
  get queued(): number {
    return this.#queue.length;
  }

  get closeReason(): string | null {
    return this.#closeReason;
  }

  /** The next message; rejects with LinkClosed when the link closes, or closes it after `timeoutMs` of silence. */
  next(timeoutMs?: number): Promise<In> {
    const queued = this.#queue.shift();
    if (queued !== undefined) {
      if (this.#queue.length < limits.linkQueueMessagesMax / 2) this.socket.resume();
      return Promise.resolve(queued);
    }
    if (this.#closeReason !== null) return Promise.reject(new LinkClosed(this.#closeReason));
    return new Promise((resolve, reject) => {
      const timer = timeoutMs === undefined ? null : setTimeout(() => this.close(`no message within ${timeoutMs} ms`), timeoutMs);
      this.#waiter = {
        resolve: (m) => {
          if (timer !== null) clearTimeout(timer);
          resolve(m);
        },
        reject: (e) => {
          if (timer !== null) clearTimeout(timer);
          reject(e);
        },
      };
    });
  }

  /**
   * Send a message; false when the socket's buffer is full (then await
   * drain()). Every message sent in one turn of the event loop leaves in one
   * write: a relay's burst of records, or acks and election messages, cost one
   * system call and one wake-up of the peer, not one each (RFC 0012).
   */
  send(message: Out): boolean {
    if (this.#closeReason !== null) return false;
    if (!this.#corked) {
      this.#corked = true;
      this.socket.cork();
      process.nextTick(() => {
        if (!this.#corked) return;
        this.#corked = false;
        this.socket.uncork();
      });
    }
    return this.socket.write(encodeFrame(this.#codec.encode(message)));
  }

  drain(): Promise<void> {
    if (this.#closeReason !== null || !this.socket.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        this.socket.off('drain', done);
        this.socket.off('close', done);
        resolve();
      };
      this.socket.once('drain', done);
      this.socket.once('close', done);
    });
  }

  close(reason: string, level: 'debug' | 'info' | 'warn' | 'error' = 'warn'): void {
    if (this.#closeReason !== null) return;
    this.#closeReason = reason;
    this.#buffer = Buffer.alloc(0);
    this.#later = [];
    this.#laterBytes = 0;
    this.#queue = [];
    this.log[level]({ reason }, 'link closed');
    // What this turn sent (a refusal's reason, most often) leaves before the socket goes.
    if (this.#corked) {
      this.#corked = false;
      this.socket.uncork();
    }
    this.socket.destroy();
    const waiter = this.#waiter;
    this.#waiter = null;
    waiter?.reject(new LinkClosed(reason));
  }

  #receive(chunk: Buffer): void {
    if (this.#closeReason !== null) return;
    if (this.#handshakeBytesLeft !== null) {
      this.#handshakeBytesLeft -= chunk.length;
      if (this.#handshakeBytesLeft < 0) return this.close(`sent more than ${limits.handshakeBytesMax} bytes before authenticating`);
    }
    try {
      this.#readFrames(chunk);
    } catch (error) {
      // The decoders return their errors; anything else thrown here is still this connection's input.
      this.close(`reading its input failed: ${(error as Error).message}`, 'error');
    }
  }

  #readFrames(chunk: Buffer): void {
    // A frame that is still incomplete keeps its chunks apart until it is whole, and is joined once:
    // joining at every chunk copied a 16 MiB frame hundreds of times (seconds of CPU per frame).
    if (this.#needed > 0 && this.#buffer.length + this.#laterBytes + chunk.length < this.#needed) {
      this.#later.push(chunk);
      this.#laterBytes += chunk.length;
      return;
    }
    this.#buffer = this.#buffer.length === 0 && this.#later.length === 0 ? chunk : Buffer.concat([this.#buffer, ...this.#later, chunk]);
    this.#later = [];
    this.#laterBytes = 0;
    this.#needed = 0;
    let offset = 0;
    while (this.#closeReason === null) {
      // readFrame refuses a length over the limit before the frame is buffered.
      const frame = readFrame(this.#buffer, offset, this.#frameBytesMax);
      if (frame.kind === 'incomplete') {
        this.#needed = frame.bytes ?? 0;
        break;
      }
      if (frame.kind === 'corrupt') return this.close(`malformed frame: ${frame.reason}`);
      offset = frame.end;
      const decoded = this.#codec.decode(frame.body);
      if (!decoded.ok) return this.close(`malformed message: ${decoded.error.message}`);
      this.#deliver(decoded.message);
    }
    this.#buffer = this.#buffer.subarray(offset);
  }

  #deliver(message: In): void {
    const waiter = this.#waiter;
    if (waiter !== null) {
      this.#waiter = null;
      waiter.resolve(message);
      return;
    }
    this.#queue.push(message);
    if (this.#queue.length >= limits.linkQueueMessagesMax) this.socket.pause();
  }
}

/** A link between sidecars. */
export class Link extends FramedLink<PeerMessage, PeerMessage> {
  constructor(socket: Socket, log: Logger) {
    super(socket, log, peerCodec, { handshake: true });
  }
}
