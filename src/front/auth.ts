// Authentication on the SQL front by PostgreSQL's own roles, without the
// password ever reaching qsync (as PgBouncer's auth_query pass-through does):
//
//   * the front reads the role's verifier from pg_authid (its own superuser
//     connection) and runs the server side of the exchange with the client;
//   * SCRAM-SHA-256: the client's proof, XORed with the client signature,
//     gives its ClientKey, which hashes to the verifier's StoredKey only if the
//     client knew the password; with that ClientKey (and the verifier's
//     ServerKey) the front runs the client side against PostgreSQL, which
//     opens the session as that role and checks the proof again itself;
//   * md5: the stored hash is what the md5 exchange proves knowledge of, so
//     the front checks the client's answer against it and answers PostgreSQL's
//     own challenge with it.
//
// An unknown role, one that cannot log in, or one without a password runs the
// same exchange against a made-up verifier and fails at its end, as
// PostgreSQL's own mock authentication does: the answer never says which.
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

export type Verifier =
  | { readonly kind: 'scram'; readonly iterations: number; readonly salt: string; readonly storedKey: Buffer; readonly serverKey: Buffer }
  | { readonly kind: 'md5'; readonly hash: string };

/** What pg_authid.rolpassword holds, or null for no usable password. */
export function parseVerifier(text: string | null): Verifier | null {
  if (text === null) return null;
  const scram = /^SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$/.exec(text);
  if (scram !== null) {
    const storedKey = Buffer.from(scram[3] as string, 'base64');
    const serverKey = Buffer.from(scram[4] as string, 'base64');
    if (storedKey.length !== 32 || serverKey.length !== 32) return null;
    return { kind: 'scram', iterations: Number(scram[1]), salt: scram[2] as string, storedKey, serverKey };
  }
  if (/^md5[0-9a-f]{32}$/.test(text)) return { kind: 'md5', hash: text.slice(3) };
  return null;
}

/** A verifier no password matches, for a role that does not exist or may not log in. */
export function mockVerifier(): Verifier {
  return { kind: 'scram', iterations: 4096, salt: randomBytes(16).toString('base64'), storedKey: randomBytes(32), serverKey: randomBytes(32) };
}

/** The client's answer did not prove the password (PostgreSQL's 28P01), or broke the exchange (08P01). */
export class AuthFailed extends Error {
  constructor(readonly sqlstate: '28P01' | '08P01', message: string) {
    super(message);
    this.name = 'AuthFailed';
  }
}

const sha256 = (data: Buffer): Buffer => createHash('sha256').update(data).digest();
const hmac = (key: Buffer, text: string): Buffer => createHmac('sha256', key).update(text).digest();

function xor(a: Buffer, b: Buffer): Buffer {
  const out = Buffer.alloc(a.length);
  for (let i = 0; i < a.length; i += 1) out[i] = (a[i] as number) ^ (b[i] as number);
  return out;
}

/** The attributes of a SCRAM message (`a=value,b=value`), in order. */
function attributes(text: string): Array<[string, string]> {
  return text.split(',').map((part) => {
    if (part.length < 2 || part[1] !== '=') throw new AuthFailed('08P01', `malformed SCRAM message: ${JSON.stringify(part.slice(0, 40))}`);
    return [part[0] as string, part.slice(2)];
  });
}

/** The keys a SCRAM exchange with PostgreSQL needs once the client proved it knows the password. */
export interface ScramKeys {
  readonly clientKey: Buffer;
  readonly serverKey: Buffer;
}

/** The server side of SCRAM-SHA-256 (RFC 5802, RFC 7677) against a stored verifier. */
export class ScramServer {
  readonly #verifier: Extract<Verifier, { kind: 'scram' }>;
  #clientFirstBare = '';
  #serverFirst = '';
  #nonce = '';
  #gs2 = '';
  readonly #serverNonce: string;

  /** `serverNonce`: fixed only by a test vector; random otherwise. */
  constructor(verifier: Extract<Verifier, { kind: 'scram' }>, serverNonce = randomBytes(18).toString('base64')) {
    this.#verifier = verifier;
    this.#serverNonce = serverNonce;
  }

  /** The client-first-message in; the server-first-message out. */
  first(clientFirst: string): string {
    const gs2End = clientFirst.indexOf(',', clientFirst.indexOf(',') + 1);
    if (gs2End < 0) throw new AuthFailed('08P01', 'malformed SCRAM client-first-message');
    this.#gs2 = clientFirst.slice(0, gs2End + 1);
    if (this.#gs2.startsWith('p')) throw new AuthFailed('08P01', 'SCRAM channel binding is not offered by the qsync SQL port; use SCRAM-SHA-256 without it');
    if (!/^[ny],(a=[^,]*)?,$/.test(this.#gs2)) throw new AuthFailed('08P01', 'malformed SCRAM GS2 header');
    this.#clientFirstBare = clientFirst.slice(gs2End + 1);
    const attrs = attributes(this.#clientFirstBare);
    const nonce = attrs.find(([k]) => k === 'r')?.[1];
    if (attrs.some(([k]) => k === 'm')) throw new AuthFailed('08P01', 'SCRAM extensions are not supported');
    if (nonce === undefined || !/^[\x21-\x2b\x2d-\x7e]+$/.test(nonce)) throw new AuthFailed('08P01', 'SCRAM client nonce missing or not printable');
    this.#nonce = nonce + this.#serverNonce;
    this.#serverFirst = `r=${this.#nonce},s=${this.#verifier.salt},i=${this.#verifier.iterations}`;
    return this.#serverFirst;
  }

  /** The client-final-message in; the server-final-message and the client's keys out, or AuthFailed. */
  final(clientFinal: string): { serverFinal: string; keys: ScramKeys } {
    const proofAt = clientFinal.lastIndexOf(',p=');
    if (proofAt < 0) throw new AuthFailed('08P01', 'SCRAM client-final-message has no proof');
    const withoutProof = clientFinal.slice(0, proofAt);
    const attrs = attributes(withoutProof);
    if (attrs[0]?.[0] !== 'c' || attrs[0][1] !== Buffer.from(this.#gs2).toString('base64')) throw new AuthFailed('08P01', 'SCRAM channel binding does not match the GS2 header');
    if (attrs[1]?.[0] !== 'r' || attrs[1][1] !== this.#nonce) throw new AuthFailed('08P01', 'SCRAM nonce does not match');
    const proof = Buffer.from(clientFinal.slice(proofAt + 3), 'base64');
    if (proof.length !== 32) throw new AuthFailed('08P01', 'malformed SCRAM proof');
    const authMessage = `${this.#clientFirstBare},${this.#serverFirst},${withoutProof}`;
    const clientKey = xor(proof, hmac(this.#verifier.storedKey, authMessage));
    if (!timingSafeEqual(sha256(clientKey), this.#verifier.storedKey)) throw new AuthFailed('28P01', 'wrong password');
    return { serverFinal: `v=${hmac(this.#verifier.serverKey, authMessage).toString('base64')}`, keys: { clientKey, serverKey: this.#verifier.serverKey } };
  }
}

/** The client side of SCRAM-SHA-256 towards PostgreSQL, proving the password with the client's ClientKey. */
export class ScramClient {
  readonly #keys: ScramKeys;
  readonly #clientFirstBare = `n=,r=${randomBytes(18).toString('base64')}`;
  #authMessage = '';

  constructor(keys: ScramKeys) {
    this.#keys = keys;
  }

  first(): string {
    return `n,,${this.#clientFirstBare}`;
  }

  final(serverFirst: string): string {
    const attrs = new Map(attributes(serverFirst));
    const nonce = attrs.get('r');
    if (nonce === undefined || !nonce.startsWith(this.#clientFirstBare.slice(5))) throw new AuthFailed('08P01', 'PostgreSQL answered SCRAM with another nonce');
    const withoutProof = `c=biws,r=${nonce}`;
    this.#authMessage = `${this.#clientFirstBare},${serverFirst},${withoutProof}`;
    const proof = xor(this.#keys.clientKey, hmac(sha256(this.#keys.clientKey), this.#authMessage));
    return `${withoutProof},p=${proof.toString('base64')}`;
  }

  /** PostgreSQL's server-final-message proves it holds the verifier too. */
  check(serverFinal: string): void {
    const expected = `v=${hmac(this.#keys.serverKey, this.#authMessage).toString('base64')}`;
    if (serverFinal !== expected) throw new AuthFailed('08P01', 'PostgreSQL\'s SCRAM signature does not match the role\'s verifier');
  }
}

/** md5 authentication: the answer to a salt, from the stored hash (md5(password || user)). */
export function md5Answer(hash: string, salt: Buffer): string {
  return `md5${createHash('md5').update(Buffer.concat([Buffer.from(hash), salt])).digest('hex')}`;
}

export function md5Matches(hash: string, salt: Buffer, answer: string): boolean {
  const expected = Buffer.from(md5Answer(hash, salt));
  const given = Buffer.from(answer);
  return given.length === expected.length && timingSafeEqual(given, expected);
}
