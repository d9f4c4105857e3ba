// A minimal logical-decoding consumer, for the `decode` mode of the postgres
// bench: what capture by logical decoding (docs/rfc/0017) would cost, measured
// before it is built. It streams pgoutput (protocol 3, two-phase) from a slot,
// turns each prepared transaction's rows into the journal's row-image JSON,
// and answers `prepared(gid)` once PostgreSQL has decoded that PREPARE.
//
// Not production code: no reconnects, no TOAST, no type conversions beyond
// text. It exists so that the bench's figure includes a Node consumer's work.
import pg from 'pg';

interface Relation {
  readonly name: string;
  readonly columns: readonly string[];
}

/** One decoded prepared transaction: per table, the JSON of its inserted rows. */
export interface DecodedPrepare {
  readonly gid: string;
  readonly changes: ReadonlyArray<{ readonly table: string; readonly op: 'insert' | 'update' | 'delete'; readonly rows: string }>;
}

const MICROS_2000 = 946_684_800_000_000n; // 2000-01-01 in Unix microseconds
const STATUS_EVERY_MS = 1_000;

class Reader {
  offset = 0;
  constructor(readonly buf: Buffer) {}
  byte(): number {
    return this.buf[this.offset++] as number;
  }
  int16(): number {
    const v = this.buf.readInt16BE(this.offset);
    this.offset += 2;
    return v;
  }
  int32(): number {
    const v = this.buf.readInt32BE(this.offset);
    this.offset += 4;
    return v;
  }
  int64(): bigint {
    const v = this.buf.readBigUInt64BE(this.offset);
    this.offset += 8;
    return v;
  }
  string(): string {
    const end = this.buf.indexOf(0, this.offset);
    const s = this.buf.toString('utf8', this.offset, end);
    this.offset = end + 1;
    return s;
  }
  /** TupleData as text values (null for NULL or an unchanged TOAST value). */
  tuple(): Array<string | null> {
    const values: Array<string | null> = [];
    for (let n = this.int16(), i = 0; i < n; i += 1) {
      const kind = this.byte();
      if (kind === 0x74 /* t */ || kind === 0x62 /* b */) {
        const length = this.int32();
        values.push(this.buf.toString('utf8', this.offset, this.offset + length));
        this.offset += length;
      } else values.push(null);
    }
    return values;
  }
}

export class PreparedStream {
  readonly #client: pg.Client;
  readonly #relations = new Map<number, Relation>();
  readonly #waiting = new Map<string, (decoded: DecodedPrepare) => void>();
  readonly #early = new Map<string, DecodedPrepare>();
  #rows = new Map<string, string[]>();
  #flushed = 0n;
  #timer: NodeJS.Timeout;
  /** Prepared transactions decoded so far. */
  decoded = 0;

  private constructor(client: pg.Client) {
    this.#client = client;
    const connection = (client as unknown as { connection: { on(e: 'copyData', f: (m: { chunk: Buffer }) => void): void; sendCopyFromChunk(b: Buffer): void } }).connection;
    connection.on('copyData', (message) => this.#onCopyData(message.chunk));
    this.#timer = setInterval(() => this.#status(), STATUS_EVERY_MS);
  }

  /** Create a two-phase pgoutput slot for `publication` and stream it. */
  static async open(connectionString: string, slot: string, publication: string): Promise<PreparedStream> {
    const admin = new pg.Client({ connectionString });
    await admin.connect();
    await admin.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput', false, true)`, [slot]);
    await admin.end();
    const client = new pg.Client({ connectionString, replication: 'database' } as pg.ClientConfig);
    await client.connect();
    const stream = new PreparedStream(client);
    client.query(`START_REPLICATION SLOT ${slot} LOGICAL 0/0 (proto_version '3', publication_names '${publication}', two_phase 'on')`).catch(() => undefined);
    return stream;
  }

  /** Resolves once the PREPARE of `gid` was decoded. */
  prepared(gid: string): Promise<DecodedPrepare> {
    const early = this.#early.get(gid);
    if (early !== undefined) {
      this.#early.delete(gid);
      return Promise.resolve(early);
    }
    return new Promise((resolve) => this.#waiting.set(gid, resolve));
  }

  /** Stop streaming and drop the slot (once its walsender has gone). */
  async close(connectionString: string, slot: string): Promise<void> {
    clearInterval(this.#timer);
    await this.#client.end().catch(() => undefined);
    const admin = new pg.Client({ connectionString });
    await admin.connect();
    try {
      for (let attempt = 0; ; attempt += 1) {
        try {
          await admin.query('SELECT pg_drop_replication_slot($1)', [slot]);
          return;
        } catch (error) {
          if (attempt >= 50) throw error;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    } finally {
      await admin.end();
    }
  }

  #onCopyData(chunk: Buffer): void {
    const r = new Reader(chunk);
    const kind = r.byte();
    if (kind === 0x6b /* k: keepalive */) {
      r.int64();
      r.int64();
      if (r.byte() === 1) this.#status();
      return;
    }
    if (kind !== 0x77 /* w: XLogData */) return;
    r.int64();
    r.int64();
    r.int64();
    this.#message(r);
  }

  #message(r: Reader): void {
    const type = String.fromCharCode(r.byte());
    switch (type) {
      case 'R': {
        const oid = r.int32();
        const schema = r.string();
        const name = r.string();
        r.byte();
        const columns: string[] = [];
        for (let n = r.int16(), i = 0; i < n; i += 1) {
          r.byte();
          columns.push(r.string());
          r.int32();
          r.int32();
        }
        this.#relations.set(oid, { name: `${schema}.${name}`, columns });
        return;
      }
      case 'b':
        this.#rows = new Map();
        return;
      case 'I': {
        const relation = this.#relations.get(r.int32());
        r.byte();
        const values = r.tuple();
        if (relation === undefined) return;
        const image: Record<string, string | null> = {};
        relation.columns.forEach((column, i) => (image[column] = values[i] ?? null));
        const rows = this.#rows.get(relation.name) ?? [];
        rows.push(JSON.stringify(image));
        this.#rows.set(relation.name, rows);
        return;
      }
      case 'P': {
        r.byte();
        r.int64();
        const end = r.int64();
        r.int64();
        r.int32();
        const gid = r.string();
        const decoded: DecodedPrepare = { gid, changes: [...this.#rows].map(([table, rows]) => ({ table, op: 'insert', rows: `[${rows.join(',')}]` })) };
        this.decoded += 1;
        this.#flushed = end;
        const waiter = this.#waiting.get(gid);
        if (waiter === undefined) this.#early.set(gid, decoded);
        else {
          this.#waiting.delete(gid);
          waiter(decoded);
        }
        return;
      }
      default:
        return; // begin, commit, commit prepared, origin, type: nothing to keep here
    }
  }

  #status(): void {
    const b = Buffer.alloc(34);
    b[0] = 0x72; // r: standby status update
    b.writeBigUInt64BE(this.#flushed, 1);
    b.writeBigUInt64BE(this.#flushed, 9);
    b.writeBigUInt64BE(this.#flushed, 17);
    b.writeBigUInt64BE(BigInt(Date.now()) * 1000n - MICROS_2000, 25);
    (this.#client as unknown as { connection: { sendCopyFromChunk(b: Buffer): void } }).connection.sendCopyFromChunk(b);
  }
}
