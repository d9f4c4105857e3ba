// The SQL port: PostgreSQL's own protocol in front of the node, so that an
// unmodified driver, ORM or psql writes sync tables (docs/rfc/0014-sql-front.md).
//
// A connection goes through the startup phase here: SSLRequest and
// GSSENCRequest are declined (the client goes on in the clear or leaves), a
// CancelRequest is passed to the session it names, a startup packet asking a
// newer minor protocol version gets NegotiateProtocolVersion; then the role
// authenticates against its own verifier (auth.ts), the front opens the
// role's own PostgreSQL session (backend.ts) and hands both to a Session.
// Every connection is admitted by the port's guard, its startup must finish
// in time, and whatever goes wrong in one closes that one only.
import { randomBytes, randomInt } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import { createSecureContext, TLSSocket, type SecureContextOptions } from 'node:tls';
import { QsyncError } from '../core/errors.js';
import { limits } from '../core/limits.js';
import type { Logger } from '../log.js';
import { AuthGate, PortGuard, type RefusalObserver } from '../net/guard.js';
import { listen } from '../net/listen.js';
import { AuthFailed, md5Matches, mockVerifier, ScramServer, type ScramKeys, type Verifier } from './auth.js';
import { Backend, BackendRefused, sendCancel, type BackendAuth, type BackendTarget } from './backend.js';
import { Inbox } from './inbox.js';
import { leadershipParameters } from './answers.js';
import { Session, type SessionHost } from './session.js';
import {
  authenticationMd5, authenticationOk, authenticationSasl, authenticationSaslContinue, authenticationSaslFinal, backendKeyData, BodyReader, CANCEL_KEY_BYTES_3_2, CANCEL_KEY_BYTES_MAX, CANCEL_REQUEST,
  errorResponse, fieldsMessage, GSSENC_REQUEST, negotiateProtocolVersion, parameterStatus, PROTOCOL_MINOR_LATEST, readyForQuery, SSL_REQUEST, WireError, type Message,
} from './wire.js';

/** What the SQL port asks of the node, beyond a session's needs. */
export interface FrontHost extends SessionHost {
  /** Where the node's PostgreSQL listens. */
  readonly target: BackendTarget;
  /** The port's certificate and key (net/tls.ts loadSqlTls); without them an SSLRequest is declined. */
  readonly tls: SecureContextOptions | null;
  /** The role's password verifier, when it exists, may log in now, and has a password. */
  verifier(role: string): Promise<Verifier | null>;
}

/** A session opened for a client: its PostgreSQL session, its startup parameters, the protocol minor version spoken. */
interface Opened {
  readonly backend: Backend;
  readonly params: Map<string, string>;
  readonly minor: number;
}

/** PostgreSQL's own bound on a startup packet. */
const STARTUP_BYTES_MAX = 10_000;
/** Parameters in a startup packet at most. */
const STARTUP_PARAMETERS_MAX = 64;

export class SqlFront {
  readonly #host: FrontHost;
  readonly #log: Logger;
  readonly #server: Server;
  readonly #guard: PortGuard;
  readonly #gate: AuthGate;
  /** Sessions by the key the front gave their client (BackendKeyData), for cancel requests. */
  readonly #sessions = new Map<string, { session: Session; backend: Backend }>();
  readonly #sockets = new Set<Socket>();

  constructor(host: FrontHost, observe: RefusalObserver = () => undefined) {
    this.#host = host;
    this.#log = host.log;
    this.#guard = new PortGuard('sql', host.log, observe, limits.sqlPort);
    this.#gate = new AuthGate(observe);
    this.#server = createServer((socket) => void this.#accept(socket));
    this.#server.on('error', (error) => this.#log.error({ err: error.message }, 'SQL port failed'));
  }

  listen(port: number, host: string): Promise<number> {
    return listen(this.#server, port, host);
  }

  /** Stop taking connections and end the sessions (a commit being decided is decided anyway: the limbo holds it). */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    for (const { backend } of this.#sessions.values()) backend.close();
    for (const socket of this.#sockets) socket.destroy();
    await closed;
  }

  async #accept(raw: Socket): Promise<void> {
    const admission = this.#guard.admit(raw);
    if (admission === null) return;
    this.#sockets.add(raw);
    raw.once('close', () => this.#sockets.delete(raw));
    raw.setNoDelay(true);
    raw.on('error', () => undefined);
    let socket = raw;
    const timer = setTimeout(() => {
      socket.end(errorResponse('08P01', `qsync: the startup and authentication took longer than ${limits.handshakeTimeoutMs} ms`, { severity: 'FATAL' }));
      socket.destroySoon();
      raw.destroySoon();
    }, limits.handshakeTimeoutMs);
    try {
      // An SSLRequest comes first, alone, before anything the Inbox reads: TLS takes the socket over from there.
      const first = await firstBytes(raw, 8);
      let inbox: Inbox;
      if (this.#host.tls !== null && first.length === 8 && first.readInt32BE(0) === 8 && first.readInt32BE(4) === SSL_REQUEST) {
        raw.write('S');
        socket = new TLSSocket(raw, { isServer: true, secureContext: createSecureContext(this.#host.tls) });
        socket.on('error', () => undefined);
        inbox = new Inbox(socket);
      } else {
        inbox = new Inbox(raw, first);
        raw.resume();
      }
      const opened = await this.#startup(socket, inbox);
      clearTimeout(timer);
      if (opened === null) return void socket.destroy();
      admission.authenticated();
      await this.#serve(socket, inbox, opened);
    } catch (error) {
      const e = error as { sqlstate?: string; message?: string };
      const sqlstate = error instanceof QsyncError && typeof error.context.sqlstate === 'string' ? error.context.sqlstate : e.sqlstate ?? '08P01';
      if (error instanceof BackendRefused) socket.write(fieldsMessage('E', new Map([...error.fields, ['S', 'FATAL'], ['V', 'FATAL']])));
      else socket.write(errorResponse(sqlstate, e.message ?? String(error), { severity: 'FATAL' }));
      socket.end();
      socket.destroySoon();
    } finally {
      clearTimeout(timer);
    }
  }

  /** The startup phase, up to a PostgreSQL session open as the client's role; null when the client left or only cancelled. */
  async #startup(socket: Socket, inbox: Inbox): Promise<Opened | null> {
    for (let declined = 0; ; declined += 1) {
      const packet = await inbox.startup(STARTUP_BYTES_MAX);
      if (packet === null) return null;
      const reader = new BodyReader(packet);
      const code = reader.int32();
      if ((code === SSL_REQUEST || code === GSSENC_REQUEST) && declined < 2) {
        // Declined: no certificate here, or already inside TLS, or GSS encryption, which the port does not offer.
        socket.write('N');
        continue;
      }
      if (code === CANCEL_REQUEST) {
        // The key: 4 bytes in protocol 3.0, up to 256 in 3.2. One that cannot be ours is ignored, as PostgreSQL does.
        const pid = reader.int32();
        const key = packet.subarray(8);
        if (key.length >= 4 && key.length <= CANCEL_KEY_BYTES_MAX) this.#cancel(pid, key);
        return null;
      }
      if (code >>> 16 !== 3) throw new WireError('0A000', `unsupported frontend protocol ${code >>> 16}.${code & 0xffff}: the qsync SQL port speaks 3.0 and 3.2`);
      // 3.2 as asked (or for anything newer); 3.1 was never a PostgreSQL version, and gets 3.0.
      const asked = code & 0xffff;
      const minor = asked >= PROTOCOL_MINOR_LATEST ? PROTOCOL_MINOR_LATEST : 0;
      const params = new Map<string, string>();
      const unrecognized: string[] = [];
      for (let key = reader.cstring(); key !== ''; key = reader.cstring()) {
        const value = reader.cstring();
        if (params.size >= STARTUP_PARAMETERS_MAX) throw new WireError('08P01', `a startup packet names at most ${STARTUP_PARAMETERS_MAX} parameters`);
        if (key.startsWith('_pq_.')) unrecognized.push(key);
        else if ((key.startsWith('qsync.') && key !== 'qsync.read') || (key === 'options' && /qsync\.(?!read\b)/i.test(value))) throw new WireError('42501', `the SQL port sets qsync's own settings itself; leave ${key === 'options' ? 'qsync.* out of options' : key} out of the connection`);
        else params.set(key, value);
      }
      if (asked !== minor || unrecognized.length > 0) socket.write(negotiateProtocolVersion(minor, unrecognized));
      const user = params.get('user');
      if (user === undefined || user === '') throw new WireError('28000', 'no PostgreSQL user name specified in startup packet');
      if (params.has('replication') && params.get('replication') !== 'false' && params.get('replication') !== 'off' && params.get('replication') !== '0') {
        throw new WireError('0A000', 'the qsync SQL port does not serve replication connections; connect to PostgreSQL itself');
      }
      inbox.messages(limits.handshakeBytesMax);
      const auth = await this.#gate.run(socket.remoteAddress ?? 'unknown', () => this.#authenticate(socket, inbox, user));
      // Marks the session as the SQL port's (migrations/0005: its schema changes to replicated tables are refused).
      params.set('qsync.via_front', 'on');
      return { backend: await Backend.open(this.#host.target, params, auth, limits.handshakeTimeoutMs), params, minor };
    }
  }

  /** Run the role's own exchange with the client; what the front proves to PostgreSQL with, or AuthFailed. */
  async #authenticate(socket: Socket, inbox: Inbox, user: string): Promise<BackendAuth> {
    const verifier = (await this.#host.verifier(user)) ?? mockVerifier();
    const refused = (): AuthFailed => new AuthFailed('28P01', `password authentication failed for user "${user}"`);
    const next = async (): Promise<Message> => {
      const m = await inbox.next();
      if (m === null) throw new AuthFailed('08P01', 'the client left during authentication');
      if (m.type !== 'p'.charCodeAt(0)) throw new AuthFailed('08P01', `expected a password message, got type ${JSON.stringify(String.fromCharCode(m.type))}`);
      return m;
    };
    try {
      if (verifier.kind === 'md5') {
        const salt = randomBytes(4);
        socket.write(authenticationMd5(salt));
        if (!md5Matches(verifier.hash, salt, new BodyReader((await next()).body).cstring())) throw refused();
        return { kind: 'md5', hash: verifier.hash };
      }
      socket.write(authenticationSasl(['SCRAM-SHA-256']));
      const initial = new BodyReader((await next()).body);
      if (initial.cstring() !== 'SCRAM-SHA-256') throw new AuthFailed('08P01', 'the qsync SQL port offers SCRAM-SHA-256 only');
      const length = initial.int32();
      const scram = new ScramServer(verifier);
      socket.write(authenticationSaslContinue(scram.first(initial.bytes(length).toString())));
      const { serverFinal, keys } = scram.final((await next()).body.toString());
      socket.write(authenticationSaslFinal(serverFinal));
      return { kind: 'scram', keys: keys satisfies ScramKeys };
    } catch (error) {
      // A refusal the login gate counts (a backoff for the address); PostgreSQL's own words and SQLSTATE.
      if (error instanceof AuthFailed && error.sqlstate === '28P01') throw new QsyncError('AUTH', refused().message, { sqlstate: '28P01' });
      throw error;
    }
  }

  async #serve(socket: Socket, inbox: Inbox, opened: Opened): Promise<void> {
    const { backend } = opened;
    const leader = this.#host.isLeader();
    const own = new Map(leadershipParameters(leader));
    // The client's own key for cancel requests, never PostgreSQL's: 4 bytes in 3.0, 32 in 3.2.
    const pid = randomInt(1, 2 ** 31 - 1);
    const secret = randomBytes(opened.minor >= PROTOCOL_MINOR_LATEST ? CANCEL_KEY_BYTES_3_2 : 4);
    const key = `${pid}:${secret.toString('hex')}`;
    const parts = [authenticationOk()];
    for (const [name, value] of backend.parameters) parts.push(parameterStatus(name, own.get(name) ?? value));
    for (const [name, value] of own) if (!backend.parameters.has(name)) parts.push(parameterStatus(name, value));
    parts.push(backendKeyData(pid, secret), readyForQuery('I'));
    socket.write(Buffer.concat(parts));
    inbox.messages(limits.frameBytesMax);
    const readAtStartup = opened.params.has('qsync.read') || /qsync\.read/i.test(opened.params.get('options') ?? '');
    const session = new Session(this.#host, socket, inbox, backend, leader, readAtStartup);
    this.#sessions.set(key, { session, backend });
    try {
      await session.serve();
    } finally {
      this.#sessions.delete(key);
    }
  }

  /** A cancel request names a session by the front's key; PostgreSQL gets the session's own. A COMMIT being decided is not cancelled. */
  #cancel(pid: number, secret: Buffer): void {
    const found = this.#sessions.get(`${pid}:${secret.toString('hex')}`);
    if (found === undefined || found.session.committing) return;
    sendCancel(this.#host.target, found.backend.pid, found.backend.secret);
  }
}

/** Up to `count` bytes of what a new connection sends first (fewer when it sends fewer and waits, or leaves). */
function firstBytes(socket: Socket, count: number): Promise<Buffer> {
  return new Promise((resolve) => {
    let got = Buffer.alloc(0);
    const done = (): void => {
      socket.off('data', take);
      socket.off('close', done);
      socket.pause();
      resolve(got);
    };
    const take = (chunk: Buffer): void => {
      got = Buffer.concat([got, chunk]);
      if (got.length >= count) done();
    };
    socket.on('data', take);
    socket.once('close', done);
  });
}
