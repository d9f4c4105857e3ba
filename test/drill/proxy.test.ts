// The link proxy's faults on real TCP: an echo server behind a LinkProxy.
// drop resets and refuses; a black hole holds bytes (never loses them) and
// resets held connections on heal; one direction can be held alone; delay
// forwards late but in order.
import { connect, createServer, type Server, type Socket } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LinkProxy } from '../../src/drill/proxy.js';
import { listen } from '../../src/net/listen.js';

let echo: Server;
let proxy: LinkProxy;
let received: Buffer[];

beforeEach(async () => {
  received = [];
  echo = createServer((socket) => socket.on('data', (chunk) => {
    received.push(chunk);
    socket.write(chunk);
  }));
  const port = await listen(echo, 0, '127.0.0.1');
  proxy = new LinkProxy(() => ({ host: '127.0.0.1', port }));
  await proxy.listen();
});

afterEach(async () => {
  await proxy.close();
  await new Promise((resolve) => echo.close(resolve));
});

function dial(): Promise<{ socket: Socket; answers: string[]; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port: proxy.port });
    const answers: string[] = [];
    socket.on('data', (chunk) => answers.push(chunk.toString()));
    socket.on('error', () => undefined);
    const closed = new Promise<void>((done) => socket.once('close', () => done()));
    socket.once('connect', () => resolve({ socket, answers, closed }));
    socket.once('error', reject);
  });
}

const settle = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Wait until `check` holds (no timing threshold: a busy machine only makes it slower). */
async function until(check: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !check(); i += 1) await settle(10);
  expect(check()).toBe(true);
}

describe('LinkProxy faults', () => {
  it('passes bytes both ways when healthy', async () => {
    const { socket, answers } = await dial();
    socket.write('ping');
    await until(() => answers.join('') === 'ping');
    socket.destroy();
  });

  it('drop resets open connections and refuses new ones until healed', async () => {
    const { closed } = await dial();
    proxy.set({ kind: 'drop' });
    await closed;
    const refused = await dial().then(async (c) => {
      await c.closed;
      return true;
    });
    expect(refused).toBe(true);
    proxy.heal();
    const { socket, answers } = await dial();
    socket.write('back');
    await until(() => answers.join('') === 'back');
    socket.destroy();
  });

  it('a black hole holds bytes without losing or delivering them, and resets the held connection on heal', async () => {
    const { socket, answers, closed } = await dial();
    proxy.set({ kind: 'blackhole', direction: 'both' });
    socket.write('held');
    await settle(300);
    expect(received).toEqual([]);
    expect(answers).toEqual([]);
    expect(proxy.connections).toBe(1); // still open: a silent network, not a refusal
    proxy.heal();
    await closed;
    const fresh = await dial();
    fresh.socket.write('after');
    await until(() => fresh.answers.join('') === 'after');
    fresh.socket.destroy();
  });

  it('one-way: forward held, so the far side gets nothing; backward held, so its answers do not come back', async () => {
    const first = await dial();
    proxy.set({ kind: 'blackhole', direction: 'forward' });
    first.socket.write('one');
    await settle(200);
    expect(received).toEqual([]);
    proxy.heal();
    await first.closed;
    const second = await dial();
    proxy.set({ kind: 'blackhole', direction: 'backward' });
    second.socket.write('two');
    await until(() => Buffer.concat(received).toString() === 'two'); // it arrived...
    await settle(200);
    expect(second.answers).toEqual([]); // ...but the echo is held
    second.socket.destroy();
  });

  it('delay forwards every chunk later, in order', async () => {
    proxy.set({ kind: 'delay', ms: 200 });
    const { socket, answers } = await dial();
    socket.write('a');
    socket.write('b');
    await settle(100);
    expect(answers).toEqual([]); // 200 ms each way: nothing can be back yet
    await until(() => answers.join('') === 'ab');
    socket.destroy();
    expect(() => proxy.set({ kind: 'delay', ms: -1 })).toThrow('a link delay must be a number of ms >= 0, got -1');
  });
});
