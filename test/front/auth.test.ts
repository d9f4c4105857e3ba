// SCRAM-SHA-256 and md5 on the SQL front (front/auth.ts), against RFC 7677's
// test vector and against each other: the server side accepts exactly the
// proof of the password, and recovers the ClientKey the client side then
// proves to PostgreSQL with.
import { createHash, createHmac, pbkdf2Sync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { AuthFailed, md5Answer, md5Matches, parseVerifier, ScramClient, ScramServer, type Verifier } from '../../src/front/auth.js';

const SALT = 'W22ZaJ0SNY7soEsUEjb6gQ==';

function scramVerifier(password: string, salt = SALT, iterations = 4096): { text: string; clientKey: Buffer } {
  const salted = pbkdf2Sync(password, Buffer.from(salt, 'base64'), iterations, 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const storedKey = createHash('sha256').update(clientKey).digest();
  const serverKey = createHmac('sha256', salted).update('Server Key').digest();
  return { text: `SCRAM-SHA-256$${iterations}:${salt}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`, clientKey };
}

const scram = (v: Verifier | null): Extract<Verifier, { kind: 'scram' }> => {
  if (v?.kind !== 'scram') throw new Error('not a SCRAM verifier');
  return v;
};

describe('SCRAM-SHA-256 on the SQL front', () => {
  it('follows RFC 7677\'s example exchange to the byte', () => {
    const { text, clientKey } = scramVerifier('pencil');
    const server = new ScramServer(scram(parseVerifier(text)), '%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0');
    expect(server.first('n,,n=user,r=rOprNGfwEbeRWgbNEkqO')).toBe('r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096');
    const { serverFinal, keys } = server.final('c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=');
    expect(serverFinal).toBe('v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=');
    expect(keys.clientKey.equals(clientKey)).toBe(true);
  });

  it('refuses a proof of another password as 28P01, and a broken exchange as 08P01', () => {
    const verifier = scram(parseVerifier(scramVerifier('pencil').text));
    const other = new ScramClient({ clientKey: scramVerifier('crayon').clientKey, serverKey: verifier.serverKey });
    const server = new ScramServer(verifier);
    expect(() => server.final(other.final(server.first(other.first())))).toThrow(expect.objectContaining({ sqlstate: '28P01' }));
    for (const bad of ['', 'n,,', 'p=tls-server-end-point,,n=,r=abc', 'n,,n=,r=', 'n,,m=ext,n=,r=abc', 'x,,n=,r=abc']) {
      expect(() => new ScramServer(verifier).first(bad), bad).toThrow(AuthFailed);
    }
    const fresh = new ScramServer(verifier);
    const serverFirst = fresh.first('n,,n=,r=abc');
    const nonce = /r=([^,]+)/.exec(serverFirst)?.[1] ?? '';
    for (const bad of ['c=biws,r=abc,p=AAAA', `c=eSws,r=${nonce},p=${Buffer.alloc(32).toString('base64')}`, `c=biws,r=${nonce}`, `c=biws,r=${nonce},p=AAAA`]) {
      expect(() => fresh.final(bad), bad).toThrow(expect.objectContaining({ sqlstate: '08P01' }));
    }
  });

  it('the keys recovered from a client\'s proof prove the password again, to a server that checks them (the pass-through)', () => {
    const { text, clientKey } = scramVerifier('pencil', 'c2FsdHNhbHRzYWx0', 8192);
    const verifier = scram(parseVerifier(text));
    // The client proves the password to the front...
    const client = new ScramClient({ clientKey, serverKey: verifier.serverKey });
    const front = new ScramServer(verifier);
    const { serverFinal, keys } = front.final(client.final(front.first(client.first())));
    client.check(serverFinal);
    // ...and the front proves it onward with what it recovered, to a server holding the same verifier.
    const onward = new ScramClient(keys);
    const postgres = new ScramServer(verifier);
    const second = postgres.final(onward.final(postgres.first(onward.first())));
    onward.check(second.serverFinal);
    expect(() => onward.check('v=AAAA')).toThrow(AuthFailed);
  });
});

describe('md5 on the SQL front', () => {
  it('checks the answer to its own salt against the stored hash, and answers another salt with it', () => {
    const hash = createHash('md5').update('secretalice').digest('hex');
    expect(parseVerifier(`md5${hash}`)).toEqual({ kind: 'md5', hash });
    const salt = Buffer.from([1, 2, 3, 4]);
    // What libpq sends: md5(md5(password || user) || salt).
    const answer = `md5${createHash('md5').update(Buffer.concat([Buffer.from(hash), salt])).digest('hex')}`;
    expect(md5Answer(hash, salt)).toBe(answer);
    expect(md5Matches(hash, salt, answer)).toBe(true);
    expect(md5Matches(hash, Buffer.from([1, 2, 3, 5]), answer)).toBe(false);
    expect(md5Matches(hash, salt, 'md5')).toBe(false);
  });

  it('takes no password, an unknown format or a malformed SCRAM verifier as no usable password', () => {
    for (const text of [null, '', 'plain', 'md5xyz', 'SCRAM-SHA-256$4096:c2FsdA==$AAAA:BBBB']) expect(parseVerifier(text)).toBeNull();
  });
});
