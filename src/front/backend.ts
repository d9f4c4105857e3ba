// A PostgreSQL session opened for one SQL-front client, as the client's own
// role: the front proves the role's password to PostgreSQL with what the
// client proved to it (auth.ts), so the session has exactly the role's
// privileges. Its messages are framed here and handed to the session
// (session.ts) raw, to be relayed as they came; the few the front reads for
// itself are decoded by node-postgres' own parser.
import { connect, type Socket } from 'node:net';
import { serialize } from 'pg-protocol';
import type { BackendMessage, DataRowMessage, DatabaseError } from 'pg-protocol/dist/messages.js';
import { Parser } from 'pg-protocol/dist/parser.js';
import { md5Answer, ScramClient, type ScramKeys } from './auth.js';
import { batchedWriter, Frames, type BatchedWriter, int32, PROTOCOL_3_0, readFields, type Message } from './wire.js';

/** Where the node's PostgreSQL listens: its Unix socket directory when the sidecar's URL names one, else TCP. */
export interface BackendTarget {
  readonly host: string;
  readonly port: number;
  readonly socketPath: string | null;
}

export function targetOf(pgUrl: string): BackendTarget {
  const url = new URL(pgUrl);
  const port = url.port === '' ? 5432 : Number(url.port);
  const host = url.searchParams.get('host') ?? decodeURIComponent(url.hostname);
  return host.startsWith('/') ? { host: 'localhost', port, socketPath: `${host}/.s.PGSQL.${port}` } : { host: host === '' ? 'localhost' : host, port, socketPath: null };
}

/** How the front proves the role's password to PostgreSQL. */
export type BackendAuth = { readonly kind: 'scram'; readonly keys: ScramKeys } | { readonly kind: 'md5'; readonly hash: string };

/** PostgreSQL refused the session or broke the protocol: its error fields, to relay to the client. */
export class BackendRefused extends Error {
  constructor(readonly fields: ReadonlyMap<string, string>) {
    super(fields.get('M') ?? 'PostgreSQL refused the session');
    this.name = 'BackendRefused';
  }
}

/** Largest message the front takes from PostgreSQL (its own protocol allows 1 GiB; rows that big are refused). */
export const BACKEND_MESSAGE_BYTES_MAX = 256 * 1024 * 1024;

function open(target: BackendTarget): Socket {
  return target.socketPath === null ? connect(target.port, target.host) : connect(target.socketPath);
}

/** Decode one raw backend message with node-postgres' parser. */
export function decode(message: Message): BackendMessage {
  let out: BackendMessage | null = null;
  new Parser().parse(message.raw, (m) => (out = m));
  if (out === null) throw new Error(`could not decode a PostgreSQL message of type ${String.fromCharCode(message.type)}`);
  return out;
}

export function dataRow(message: Message): Array<string | null> {
  return (decode(message) as DataRowMessage).fields as Array<string | null>;
}

export function errorOf(message: Message): DatabaseError {
  return decode(message) as DatabaseError;
}

export class Backend {
  readonly #socket: Socket;
  readonly #frames = new Frames('PostgreSQL');
  /** ParameterStatus values PostgreSQL reported at startup, to relay. */
  readonly parameters = new Map<string, string>();
  pid = 0;
  secret = 0;
  #onMessage: (m: Message) => void = () => undefined;
  #onClose: (error: Error | null) => void = () => undefined;
  #closed = false;
  readonly #out: BatchedWriter;

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.setNoDelay(true);
    this.#out = batchedWriter(socket);
  }

  /** Open a session as `params.user` and authenticate it; resolves once PostgreSQL is ready for queries. */
  static open(target: BackendTarget, params: ReadonlyMap<string, string>, auth: BackendAuth, timeoutMs: number): Promise<Backend> {
    const backend = new Backend(open(target));
    const socket = backend.#socket;
    return new Promise<Backend>((resolve, reject) => {
      let scram: ScramClient | null = null;
      const timer = setTimeout(() => fail(new Error(`PostgreSQL did not open a session within ${timeoutMs} ms`)), timeoutMs);
      const fail = (error: Error): void => {
        clearTimeout(timer);
        socket.destroy();
        reject(error);
      };
      socket.on('error', (error) => fail(error));
      socket.on('close', () => fail(new Error('PostgreSQL closed the connection while the session opened')));
      socket.on('connect', () => socket.write(startupPacket(params)));
      backend.#onMessage = (m) => {
        try {
          const type = String.fromCharCode(m.type);
          if (type === 'R') {
            const code = m.body.readInt32BE(0);
            if (code === 0) return;
            if (code === 5 && auth.kind === 'md5') return void socket.write(serialize.password(md5Answer(auth.hash, m.body.subarray(4, 8))));
            if (code === 10 && auth.kind === 'scram') {
              scram = new ScramClient(auth.keys);
              return void socket.write(serialize.sendSASLInitialResponseMessage('SCRAM-SHA-256', scram.first()));
            }
            if (code === 11 && scram !== null) return void socket.write(serialize.sendSCRAMClientFinalMessage(scram.final(m.body.subarray(4).toString())));
            if (code === 12 && scram !== null) return scram.check(m.body.subarray(4).toString());
            // As PostgreSQL itself answers a role whose stored password its pg_hba.conf method cannot check.
            throw new BackendRefused(new Map([['S', 'FATAL'], ['C', '28P01'], ['M', `password authentication failed for user "${params.get('user') ?? ''}"`],
              ['D', code === 10 ? 'The role\'s password is stored as md5, and pg_hba.conf asks for SCRAM-SHA-256: set the password again with password_encryption = scram-sha-256.'
                : `PostgreSQL asked for authentication method ${code}, which the SQL port cannot pass through; give the role a SCRAM-SHA-256 password.`]]));
          }
          if (type === 'E') throw new BackendRefused(readFields(m.body));
          if (type === 'S') {
            const [name, value] = m.body.toString('utf8').split('\0');
            backend.parameters.set(name ?? '', value ?? '');
          } else if (type === 'K') {
            backend.pid = m.body.readInt32BE(0);
            backend.secret = m.body.readInt32BE(4);
          } else if (type === 'Z') {
            clearTimeout(timer);
            socket.removeAllListeners('error');
            socket.removeAllListeners('close');
            backend.#serve();
            resolve(backend);
          }
        } catch (error) {
          fail(error as Error);
        }
      };
      socket.on('data', (chunk) => backend.#take(chunk));
    });
  }

  /** From now on, messages go to `onMessage`; the end of the connection to `onClose`, once. */
  listen(onMessage: (m: Message) => void, onClose: (error: Error | null) => void): void {
    this.#onMessage = onMessage;
    this.#onClose = onClose;
  }

  #serve(): void {
    this.#onMessage = () => undefined;
    this.#socket.on('error', (error) => this.#ended(error));
    this.#socket.on('close', () => this.#ended(null));
  }

  #ended(error: Error | null): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#onClose(error);
  }

  #take(chunk: Buffer): void {
    try {
      this.#frames.push(chunk);
      for (let m = this.#frames.message(BACKEND_MESSAGE_BYTES_MAX); m !== null; m = this.#frames.message(BACKEND_MESSAGE_BYTES_MAX)) this.#onMessage(m);
    } catch (error) {
      this.#socket.destroy();
      this.#ended(error as Error);
    }
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Bytes the front wrote, or a client's message relayed as it came (wire.ts BatchedWriter). */
  write(data: Buffer | Message): boolean {
    return this.#out.write(data);
  }

  pause(): void {
    this.#socket.pause();
  }

  resume(): void {
    this.#socket.resume();
  }

  /** The socket's write buffer drained (for back-pressure from client to PostgreSQL). */
  onDrain(fn: () => void): void {
    this.#socket.once('drain', fn);
  }

  close(): void {
    if (this.#socket.destroyed) return;
    this.#out.flush();
    this.#socket.end(Buffer.from('X\0\0\0\x04', 'latin1'));
    this.#socket.destroySoon();
  }
}

function startupPacket(params: ReadonlyMap<string, string>): Buffer {
  const parts: Buffer[] = [int32(PROTOCOL_3_0)];
  for (const [key, value] of params) parts.push(Buffer.from(`${key}\0${value}\0`));
  parts.push(Buffer.from([0]));
  const body = Buffer.concat(parts);
  return Buffer.concat([int32(body.length + 4), body]);
}

/** Ask PostgreSQL to cancel what a session runs (a connection of its own, as the protocol wants). */
export function sendCancel(target: BackendTarget, pid: number, secret: number): void {
  const socket = open(target);
  socket.on('error', () => undefined);
  socket.on('connect', () => socket.end(serialize.cancel(pid, secret)));
  socket.setTimeout(5_000, () => socket.destroy());
}
