// What one client's PostgreSQL session answers, told apart by unit: a unit
// is the messages up to one ReadyForQuery, and units are answered in the
// order they were sent. The front's own statements (a term, a BEGIN, a
// capture) and the client's pipelines queue as units on the one session, so
// the front's can leave in the same write as the client's and never be
// confused with them. A unit's answers go to its sink: kept (the front's own)
// or relayed (the client's).
import type { DatabaseError } from 'pg-protocol/dist/messages.js';
import { dataRow, errorOf } from './backend.js';
import type { InternalResult } from './transaction.js';
import type { Message, TransactionStatus } from './wire.js';

/** How a relayed unit ended: PostgreSQL's transaction status, and whether it sent an error. */
export interface UnitEnd {
  readonly status: TransactionStatus;
  readonly errored: boolean;
}

interface Sink {
  message(m: Message): void;
  /** ReadyForQuery came; `lost`: the session ended before it did. */
  end(status: TransactionStatus, lost?: boolean): void;
}

/** What the front's own statements get when the PostgreSQL session has ended. */
function sessionLost(): DatabaseError {
  return Object.assign(new Error('qsync: the PostgreSQL session of this client ended'), { code: '08006' }) as unknown as DatabaseError;
}

const READY = 'Z'.charCodeAt(0);
const ERROR = 'E'.charCodeAt(0);
const DATA_ROW = 'D'.charCodeAt(0);

export class Units {
  readonly #sinks: Sink[] = [];
  #status: TransactionStatus = 'I';
  readonly #send: (data: Buffer) => void;
  readonly #closed: () => boolean;
  readonly #between: (m: Message) => void;

  /** `between`: what PostgreSQL sends outside any unit (a notification, a notice, a parameter change). */
  constructor(send: (data: Buffer) => void, closed: () => boolean, between: (m: Message) => void) {
    this.#send = send;
    this.#closed = closed;
    this.#between = between;
  }

  /** PostgreSQL's transaction status at its last ReadyForQuery. */
  get status(): TransactionStatus {
    return this.#status;
  }

  /** Units sent and not yet answered. */
  get pending(): number {
    return this.#sinks.length;
  }

  /** The front's own statements, `count` units of them: the last one's status and rows, with the first error of any. */
  internal(messages: Buffer, count = 1): Promise<InternalResult> {
    if (this.#closed()) return Promise.resolve({ status: 'I', rows: [], error: sessionLost() });
    const results = Array.from({ length: count }, () => {
      const rows: Array<Array<string | null>> = [];
      let error: DatabaseError | null = null;
      return new Promise<InternalResult>((resolve) => this.#sinks.push({
        message: (m) => {
          if (m.type === DATA_ROW) rows.push(dataRow(m));
          else if (m.type === ERROR) error ??= errorOf(m);
        },
        end: (status, lost) => resolve({ status, rows, error: lost === true ? error ?? sessionLost() : error }),
      }));
    });
    this.#send(messages);
    return Promise.all(results).then((rs) => ({ ...(rs.at(-1) as InternalResult), error: rs.find((r) => r.error !== null)?.error ?? null }));
  }

  /** Hand each answer to `messages` (or to what is sent next, when null) to `relay`, up to its ReadyForQuery, which is kept. */
  relay(messages: Buffer | null, relay: (m: Message) => void): Promise<UnitEnd> {
    if (this.#closed()) return Promise.resolve({ status: 'I', errored: true });
    let errored = false;
    const ended = new Promise<UnitEnd>((resolve) => this.#sinks.push({
      message: (m) => {
        if (m.type === ERROR) errored = true;
        relay(m);
      },
      end: (status, lost) => resolve({ status, errored: errored || lost === true }),
    }));
    if (messages !== null) this.#send(messages);
    return ended;
  }

  /** One message from PostgreSQL. */
  take(m: Message): void {
    if (m.type === READY) {
      this.#status = String.fromCharCode(m.firstByte ?? 0x49) as TransactionStatus;
      this.#sinks.shift()?.end(this.#status);
      return;
    }
    const sink = this.#sinks[0];
    if (sink === undefined) this.#between(m);
    else sink.message(m);
  }

  /** The session ended: every unit waiting ends, lost. */
  lost(): void {
    this.#status = 'I';
    for (const sink of this.#sinks.splice(0)) sink.end('I', true);
  }
}
