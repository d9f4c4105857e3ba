// Proves the peer links over real TCP with real journals: a subscriber gets
// every record it lacks (not its own), first from the files then live, and
// its acks reach the relay; and every bad input (wrong secret either way,
// wrong cluster, garbage, oversized or unknown frames, silence) closes only
// that link with a logged reason while the relay keeps serving. With peer TLS,
// only nodes whose certificate the cluster CA signed get past the first byte.
import { chmod } from 'node:fs/promises';
import { connect } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { codec, type JournalRecord } from '../../src/core/record.js';
import type { ReplicaId, Term } from '../../src/core/types.js';
import { vclockGet, type VClock } from '../../src/core/vclock.js';
import { Journal } from '../../src/journal/index.js';
import { encodeFrame } from '../../src/journal/frame.js';
import { createLogger } from '../../src/log.js';
import { RelayServer, Subscriber, type PeerIdentity } from '../../src/net/peer.js';
import { loadPeerTls, type PeerTlsFiles } from '../../src/net/tls.js';
import { clusterCa } from '../support/tls.js';
import { key, nextTxn, readAll, tempDir } from '../support/journal.js';

interface Captured {
  lines: Array<Record<string, unknown>>;
  log: ReturnType<typeof createLogger>;
}
function capturedLog(node: number): Captured {
  const lines: Array<Record<string, unknown>> = [];
  return { lines, log: createLogger({ node }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) }) };
}

const relayId: PeerIdentity = { cluster: 'c1', replica: 1 as ReplicaId, secret: 'correct horse' };
let cleanups: Array<() => Promise<void>> = [];
let relayJournal: Journal;
let relay: RelayServer;
let relayLog: Captured;
let port: number;
let acks: Array<{ replica: number; vclock: VClock; term: number }>;

beforeEach(async () => {
  const temp = await tempDir();
  relayJournal = await Journal.open({ dir: temp.dir });
  relayLog = capturedLog(1);
  acks = [];
  relay = new RelayServer({ identity: relayId, journal: relayJournal, log: relayLog.log, onAck: (replica, vclock, term) => acks.push({ replica, vclock, term }) });
  port = await relay.listen(0);
  cleanups = [async () => relay.close(), async () => relayJournal.close(), temp.cleanup];
});
afterEach(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** A subscriber node (replica 2) with its own journal that appends what it receives, dropping duplicates. */
async function subscriberNode(identity: PeerIdentity = { ...relayId, replica: 2 as ReplicaId }): Promise<{ journal: Journal; sub: Subscriber; log: Captured }> {
  const temp = await tempDir();
  const journal = await Journal.open({ dir: temp.dir });
  const log = capturedLog(2);
  const sub = new Subscriber({
    identity, peer: { replica: 1 as ReplicaId, host: '127.0.0.1', port }, log: log.log, backoffMsMin: 20, backoffMsMax: 100,
    vclock: () => journal.tailVclock,
    onRecord: async (record: JournalRecord) => {
      if (record.lsn <= vclockGet(journal.tailVclock, record.replica)) return;
      await journal.append(record);
    },
    ack: () => ({ vclock: journal.vclock, term: 7 as Term }),
  });
  cleanups.push(async () => sub.stop(), async () => journal.close(), temp.cleanup);
  return { journal, sub, log };
}

async function until(condition: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 500; i += 1) {
    if (await condition()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe('relay and subscribe', () => {
  it('streams what the subscriber lacks (not its own records), then live records, and receives acks', async () => {
    for (const replica of [1, 3, 2, 1, 3]) await relayJournal.append(nextTxn(relayJournal, replica));
    const { journal, sub } = await subscriberNode();
    await journal.append(nextTxn(journal, 2)); // its own record 2:1, also in the relay's journal
    sub.start();
    await until(() => journal.vclock.length >= 4 && vclockGet(journal.vclock, 1 as ReplicaId) === 2 && vclockGet(journal.vclock, 3 as ReplicaId) === 2, 'catch-up');
    for (let i = 0; i < 20; i += 1) await relayJournal.append(nextTxn(relayJournal, 1 + (i % 3 === 0 ? 2 : 0)));
    await until(() => vclockGet(journal.vclock, 1 as ReplicaId) === 15 && vclockGet(journal.vclock, 3 as ReplicaId) === 9, 'live records');
    expect((await readAll(journal)).map(key)).toEqual(['2:1', '1:1', '3:1', '1:2', '3:2', ...(await readAll(relayJournal)).slice(5).map(key)]);
    await until(() => acks.some((a) => vclockGet(a.vclock, 1 as ReplicaId) === 15), 'acks');
    expect(acks.at(-1)).toMatchObject({ replica: 2, term: 7 });
  });
});

describe('flow control', () => {
  it('hands the node at most peerInFlightBytesMax of records not yet done, then reads on as they complete', async () => {
    const count = 72;
    for (let i = 0; i < count; i += 1) await relayJournal.append(nextTxn(relayJournal, 1, 1024 * 1024));
    const temp = await tempDir();
    const journal = await Journal.open({ dir: temp.dir });
    let handed = 0;
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const sub = new Subscriber({
      identity: { ...relayId, replica: 2 as ReplicaId }, peer: { replica: 1 as ReplicaId, host: '127.0.0.1', port }, log: capturedLog(2).log,
      vclock: () => journal.tailVclock,
      onRecord: async (record) => {
        handed += 1;
        const appended = journal.append(record);
        await released;
        await appended;
      },
      ack: () => ({ vclock: journal.vclock, term: 7 as Term }),
    });
    cleanups.push(async () => sub.stop(), async () => journal.close(), temp.cleanup);
    sub.start();
    await until(() => handed >= 60, 'records handed over');
    await new Promise((r) => setTimeout(r, 300));
    // Each record carries a little over 1 MiB of rows: the 64 MiB bound stops the reading near 64 of them.
    expect(handed).toBeLessThanOrEqual(64);
    release();
    await until(() => vclockGet(journal.vclock, 1 as ReplicaId) === count, 'every record, once they complete');
  });
});

describe('refusals', () => {
  it('refuses a subscriber with the wrong secret, logs why, and keeps serving', async () => {
    const bad = await subscriberNode({ ...relayId, replica: 2 as ReplicaId, secret: 'wrong' });
    bad.sub.start();
    await until(() => relayLog.lines.some((l) => l.reason === 'replica 2 did not prove the cluster secret'), 'refusal logged');
    await until(() => (bad.sub.lastError ?? '').includes('refused by peer: replica 2 did not prove the cluster secret'), 'subscriber told');
    expect(bad.journal.vclock).toEqual([]);
    await bad.sub.stop();
    const good = await subscriberNode({ ...relayId, replica: 3 as ReplicaId });
    await relayJournal.append(nextTxn(relayJournal, 1));
    good.sub.start();
    await until(() => vclockGet(good.journal.vclock, 1 as ReplicaId) === 1, 'good subscriber served');
  });

  it('refuses a relay that cannot prove the secret (mutual authentication)', async () => {
    const impostorDir = await tempDir();
    const impostorJournal = await Journal.open({ dir: impostorDir.dir });
    cleanups.push(impostorDir.cleanup);
    const impostor = new RelayServer({ identity: { ...relayId, secret: 'impostor' }, journal: impostorJournal, log: capturedLog(9).log, onAck: () => undefined });
    const impostorPort = await impostor.listen(0);
    cleanups.push(async () => impostor.close(), async () => impostorJournal.close());
    const temp = await tempDir();
    const journal = await Journal.open({ dir: temp.dir });
    cleanups.push(async () => journal.close(), temp.cleanup);
    const sub = new Subscriber({
      identity: { ...relayId, replica: 2 as ReplicaId }, peer: { replica: 1 as ReplicaId, host: '127.0.0.1', port: impostorPort }, log: capturedLog(2).log,
      vclock: () => journal.vclock, onRecord: async () => undefined, ack: () => ({ vclock: journal.vclock, term: 0 as Term }), backoffMsMin: 20,
    });
    sub.start();
    cleanups.push(async () => sub.stop());
    // The impostor refuses our proof too (secrets differ); either way no record is accepted.
    await until(() => sub.lastError !== null, 'refusal');
    expect(sub.connected).toBe(false);
  });

  it('refuses a wrong cluster id with the reason', async () => {
    const bad = await subscriberNode({ ...relayId, cluster: 'other', replica: 2 as ReplicaId });
    bad.sub.start();
    // The subscriber checks the relay's hello first and refuses; the relay logs the refusal it was sent.
    await until(() => relayLog.lines.some((l) => l.reason === 'refused by peer: cluster id "c1" is not this cluster ("other")'), 'refusal logged');
    expect(bad.sub.connected).toBe(false);
  });

  async function send(bytes: Buffer): Promise<void> {
    const socket = connect({ host: '127.0.0.1', port });
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    socket.on('error', () => undefined);
    socket.resume(); // discard the relay's hello, so that 'close' can come
    socket.write(bytes);
    await new Promise<void>((resolve) => socket.once('close', () => resolve()));
  }

  it.each([
    ['garbage bytes', Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), /malformed frame/],
    ['an oversized frame', Buffer.from([0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0]), /frame length 2147483647 exceeds the limit/],
    ['an unknown message', encodeFrame(codec.pack({ m: 99 })), /malformed message: invalid record: message: unknown message code 99/],
    ['a record before the handshake', encodeFrame(codec.pack({ m: 4, vc: [] })), /expected hello, got subscribe/],
    ['a zero-length frame', Buffer.alloc(8), /zero-length frame/],
  ])('closes the link on %s, logs why, and keeps serving', async (_what, bytes, reason) => {
    await send(bytes);
    await until(() => relayLog.lines.some((l) => typeof l.reason === 'string' && reason.test(l.reason)), 'reason logged');
    const good = await subscriberNode({ ...relayId, replica: 3 as ReplicaId });
    await relayJournal.append(nextTxn(relayJournal, 1));
    good.sub.start();
    await until(() => vclockGet(good.journal.vclock, 1 as ReplicaId) === 1, 'still serving');
  });
});

describe('peer TLS (mutual, under the cluster CA)', () => {
  let certs: Record<string, PeerTlsFiles>;
  let foreign: Record<string, PeerTlsFiles>;
  let tlsRelay: RelayServer;
  let tlsPort: number;
  let tlsRelayLog: Captured;

  beforeEach(async () => {
    const temp = await tempDir();
    cleanups.push(temp.cleanup);
    certs = await clusterCa(temp.dir, 'c1', ['node1', 'node2']);
    foreign = await clusterCa(temp.dir, 'other', ['node2']);
    tlsRelayLog = capturedLog(1);
    tlsRelay = new RelayServer({ identity: { ...relayId, tls: loadPeerTls(certs.node1 as PeerTlsFiles) }, journal: relayJournal, log: tlsRelayLog.log, onAck: () => undefined });
    tlsPort = await tlsRelay.listen(0);
    cleanups.push(async () => tlsRelay.close());
  });

  /** A subscriber (replica 2) to the TLS relay, with the given TLS files or none. */
  async function tlsSubscriber(files: PeerTlsFiles | null): Promise<{ journal: Journal; sub: Subscriber }> {
    const temp = await tempDir();
    const journal = await Journal.open({ dir: temp.dir });
    const sub = new Subscriber({
      identity: { ...relayId, replica: 2 as ReplicaId, ...(files === null ? {} : { tls: loadPeerTls(files) }) },
      peer: { replica: 1 as ReplicaId, host: '127.0.0.1', port: tlsPort }, log: capturedLog(2).log, backoffMsMin: 20, backoffMsMax: 100,
      vclock: () => journal.tailVclock,
      onRecord: async (record) => {
        if (record.lsn > vclockGet(journal.tailVclock, record.replica)) await journal.append(record);
      },
      ack: () => ({ vclock: journal.vclock, term: 7 as Term }),
    });
    cleanups.push(async () => sub.stop(), async () => journal.close(), temp.cleanup);
    return { journal, sub };
  }

  it('streams records between nodes whose certificates the cluster CA signed', async () => {
    for (let i = 0; i < 5; i += 1) await relayJournal.append(nextTxn(relayJournal, 1));
    const { journal, sub } = await tlsSubscriber(certs.node2 as PeerTlsFiles);
    sub.start();
    await until(() => vclockGet(journal.vclock, 1 as ReplicaId) === 5, 'records over TLS');
    expect(sub.connected).toBe(true);
  });

  it('refuses a peer without TLS and a peer whose certificate another CA signed; neither receives a record', async () => {
    await relayJournal.append(nextTxn(relayJournal, 1));
    const plain = await tlsSubscriber(null);
    const stranger = await tlsSubscriber(foreign.node2 as PeerTlsFiles);
    plain.sub.start();
    stranger.sub.start();
    await until(() => plain.sub.lastError !== null && stranger.sub.lastError !== null, 'both refused');
    await new Promise((r) => setTimeout(r, 200));
    expect(plain.journal.vclock).toEqual([]);
    expect(stranger.journal.vclock).toEqual([]);
    expect(plain.sub.connected || stranger.sub.connected).toBe(false);
    // A plain TCP client gets TLS, never a qsync hello in the clear.
    const socket = connect({ host: '127.0.0.1', port: tlsPort });
    socket.on('error', () => undefined);
    const received: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => received.push(chunk));
    socket.write(encodeFrame(codec.pack({ m: 1 })));
    await new Promise<void>((resolve) => {
      socket.once('close', () => resolve());
      setTimeout(resolve, 500);
    });
    socket.destroy();
    expect(Buffer.concat(received).includes(Buffer.from('c1'))).toBe(false);
    // And the relay still serves a good peer.
    const good = await tlsSubscriber(certs.node2 as PeerTlsFiles);
    good.sub.start();
    await until(() => vclockGet(good.journal.vclock, 1 as ReplicaId) === 1, 'a good peer served');
  });

  it('refuses to start on a private key others may read, naming the fix', async () => {
    const open = certs.node1 as PeerTlsFiles;
    await chmod(open.key, 0o644);
    expect(() => loadPeerTls(open)).toThrow(/may be read by others; chmod 600/);
  });
});
