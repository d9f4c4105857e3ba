// node-postgres writes each protocol message of a query by itself (Parse,
// Bind, Describe, Execute, Sync: five socket writes for one statement), and
// every write may wake the PostgreSQL backend for a partial read. On a busy
// 2-core machine those writes and wake-ups were most of the leader sidecar's
// time (docs/rfc/0012-followers-hold-the-limbo.md). This makes every write of
// one turn of the event loop leave in one: the same bytes, in the same order.
import type pg from 'pg';

/** The socket under a client (node-postgres keeps it as connection.stream). */
interface WithStream {
  readonly connection?: { readonly stream?: NodeJS.WritableStream & { cork(): void; uncork(): void } };
}

const corked = new WeakSet<object>();

export function corkWrites(client: pg.ClientBase): void {
  const stream = (client as unknown as WithStream).connection?.stream;
  if (stream === undefined || corked.has(stream) || typeof stream.cork !== 'function') return;
  corked.add(stream);
  const write = stream.write.bind(stream) as (...args: unknown[]) => boolean;
  let holding = false;
  (stream as unknown as { write: (...args: unknown[]) => boolean }).write = (...args: unknown[]): boolean => {
    if (!holding) {
      holding = true;
      stream.cork();
      process.nextTick(() => {
        holding = false;
        stream.uncork();
      });
    }
    return write(...args);
  };
}
