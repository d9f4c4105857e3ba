// A real redis-server for tests, on a free port, without persistence; stop()
// ends it. `.ci/run` installs Debian's redis-server when it is missing.
import { spawn, type ChildProcess } from 'node:child_process';
import { Redis } from 'ioredis';
import { freePort } from '../../src/postgres/index.js';

export interface TestRedis {
  readonly url: string;
  readonly port: number;
  /** A plain client for the test's own commands. */
  client(): Redis;
  /** SIGSTOP / SIGCONT: Redis frozen (slow) but its port open. */
  pause(): void;
  resume(): void;
  stop(): Promise<void>;
}

export async function startRedis(): Promise<TestRedis> {
  const port = await freePort();
  const child: ChildProcess = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  const spawnFailed = new Promise<never>((_, reject) => child.once('error', (error) => reject(new Error(`cannot start redis-server (apt-get install redis-server): ${error.message}`))));
  const clients: Redis[] = [];
  const client = (): Redis => {
    const c = new Redis({ port, host: '127.0.0.1', lazyConnect: false, maxRetriesPerRequest: 1 });
    c.on('error', () => undefined);
    clients.push(c);
    return c;
  };
  const probe = new Redis({ port, host: '127.0.0.1', retryStrategy: () => 50 });
  probe.on('error', () => undefined);
  await Promise.race([probe.ping(), spawnFailed]);
  probe.disconnect();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    client,
    pause: () => child.kill('SIGSTOP'),
    resume: () => child.kill('SIGCONT'),
    stop: async () => {
      for (const c of clients) c.disconnect();
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGCONT');
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      await exited;
    },
  };
}
