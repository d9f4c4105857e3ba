// PostgreSQL's frontend/backend protocol v3, as the SQL front needs it: the
// framing of what a client sends (its startup packet, then typed messages),
// with every length checked against a limit before anything is buffered for
// it, and the few backend messages the front writes itself. What PostgreSQL
// sends back is split by the same framing and relayed as it came; the
// messages the front must read (authentication, errors, rows of its own
// statements) are decoded by node-postgres' own parser (backend.ts).

/** Startup packet codes (the int32 after the length). */
export const PROTOCOL_3_0 = 3 << 16;
/** The newest minor version the port speaks: 3.2 (PostgreSQL 18), whose cancel keys are up to 256 bytes. */
export const PROTOCOL_MINOR_LATEST = 2;
/** Bytes of the cancel key the port gives a 3.2 client (PostgreSQL 18 gives 32); a 3.0 client gets 4. */
export const CANCEL_KEY_BYTES_3_2 = 32;
/** The longest cancel key protocol 3.2 allows. */
export const CANCEL_KEY_BYTES_MAX = 256;
export const SSL_REQUEST = 80877103;
export const GSSENC_REQUEST = 80877104;
export const CANCEL_REQUEST = 80877102;

/** A client sent what the protocol does not allow: the connection is closed after one ErrorResponse. */
export class WireError extends Error {
  constructor(readonly sqlstate: string, message: string) {
    super(message);
    this.name = 'WireError';
  }
}

/**
 * One typed message: its type byte and where it lies in the bytes it came
 * in. Its body (without the length) and the whole message are views made
 * only when asked for: most of what PostgreSQL answers is relayed by its
 * place alone (BatchedWriter.span), and a view each per message was a
 * good part of the front's cost per read.
 */
export class Message {
  #body: Buffer | null = null;
  #raw: Buffer | null = null;

  /** `buf[start, end)` is the whole message, type byte first. */
  constructor(readonly type: number, readonly buf: Buffer, readonly start: number, readonly end: number) {}

  get body(): Buffer {
    return (this.#body ??= this.buf.subarray(this.start + 5, this.end));
  }

  /** The whole message as it came, to relay without copying. */
  get raw(): Buffer {
    return (this.#raw ??= this.buf.subarray(this.start, this.end));
  }

  /** The first byte of the body (ReadyForQuery's status), without a view. */
  get firstByte(): number | undefined {
    return this.start + 5 < this.end ? this.buf[this.start + 5] : undefined;
  }

  /** The body as latin1 text without its final NUL (a CommandComplete's tag), without a view. */
  tag(): string {
    return this.buf.toString('latin1', this.start + 5, Math.max(this.start + 5, this.end - 1));
  }
}

/**
 * Splits a byte stream into frames. A frame's declared length is checked as
 * soon as its header is in: a length out of bounds fails at once, before a
 * byte of its body is kept.
 */
export class Frames {
  #buffer: Buffer = Buffer.alloc(0);
  #offset = 0;
  /** Chunks received after #buffer, joined only once the frame they complete is whole: a large frame arriving in many chunks is copied once, not once per chunk. */
  #later: Buffer[] = [];
  #laterBytes = 0;
  /** Bytes from #offset the frame being read needs in all (0: not known yet). */
  #needed = 0;

  constructor(readonly what: string) {}

  /** Bytes received and not yet returned as frames. */
  get pending(): number {
    return this.#buffer.length - this.#offset + this.#laterBytes;
  }

  push(chunk: Buffer): void {
    if (this.#needed > 0 && this.pending + chunk.length < this.#needed) {
      this.#later.push(chunk);
      this.#laterBytes += chunk.length;
      return;
    }
    const rest = this.#buffer.subarray(this.#offset);
    this.#buffer = rest.length === 0 && this.#later.length === 0 ? chunk : Buffer.concat([rest, ...this.#later, chunk]);
    this.#offset = 0;
    this.#later = [];
    this.#laterBytes = 0;
    this.#needed = 0;
  }

  /** A startup-phase packet (int32 length, then its body, no type byte), or null until complete. */
  startup(bytesMax: number): Buffer | null {
    if (this.#buffer.length - this.#offset < 4) return null;
    const length = this.#buffer.readInt32BE(this.#offset);
    if (length < 8 || length > bytesMax) throw new WireError('08P01', `invalid ${this.what} startup packet length ${length} (at most ${bytesMax} bytes)`);
    if (this.#buffer.length - this.#offset < length) {
      this.#needed = length;
      return null;
    }
    const body = this.#buffer.subarray(this.#offset + 4, this.#offset + length);
    this.#offset += length;
    return body;
  }

  /** A typed message, or null until complete. */
  message(bytesMax: number): Message | null {
    if (this.#buffer.length - this.#offset < 5) return null;
    const length = this.#buffer.readInt32BE(this.#offset + 1);
    if (length < 4 || length > bytesMax) {
      throw new WireError(length < 4 ? '08P01' : '54000', `invalid ${this.what} message length ${length} (type ${JSON.stringify(String.fromCharCode(this.#buffer[this.#offset] ?? 0))}, at most ${bytesMax} bytes)`);
    }
    if (this.#buffer.length - this.#offset < length + 1) {
      this.#needed = length + 1;
      return null;
    }
    const start = this.#offset;
    this.#offset += length + 1;
    return new Message(this.#buffer[start] as number, this.#buffer, start, start + length + 1);
  }
}

/** Reads the NUL-terminated strings and integers of a message body, failing on a body cut short. */
export class BodyReader {
  #offset = 0;

  constructor(readonly body: Buffer) {}

  get done(): boolean {
    return this.#offset >= this.body.length;
  }

  cstring(): string {
    const end = this.body.indexOf(0, this.#offset);
    if (end < 0) throw new WireError('08P01', 'invalid message format: a string has no terminator');
    const text = this.body.toString('utf8', this.#offset, end);
    this.#offset = end + 1;
    return text;
  }

  int32(): number {
    if (this.#offset + 4 > this.body.length) throw new WireError('08P01', 'invalid message format: message cut short');
    const value = this.body.readInt32BE(this.#offset);
    this.#offset += 4;
    return value;
  }

  int16(): number {
    if (this.#offset + 2 > this.body.length) throw new WireError('08P01', 'invalid message format: message cut short');
    const value = this.body.readInt16BE(this.#offset);
    this.#offset += 2;
    return value;
  }

  bytes(length: number): Buffer {
    if (length < 0 || this.#offset + length > this.body.length) throw new WireError('08P01', 'invalid message format: message cut short');
    const out = this.body.subarray(this.#offset, this.#offset + length);
    this.#offset += length;
    return out;
  }
}

/**
 * A socket's writes of one turn of the event loop, sent as one: a relayed
 * pipeline is many small messages each way (Bind, Execute, Sync; BindComplete,
 * DataRow, CommandComplete, ReadyForQuery), and a write each, with the wake-up
 * each causes on the other side, was most of the front's cost. The socket is
 * corked at the first write and uncorked at setImmediate (not nextTick: a
 * session handles a pipeline's messages one by one across promise turns, all
 * before the event loop's next phase). Gathering the bytes into one buffer
 * instead measured the same CPU per read (bench front).
 *
 * Messages relayed as they came go by their place (a `Message`, not
 * bytes): messages that lie one after another in the same received bytes
 * leave as one view of them, made when something else is written, or at the
 * flush.
 */
export function batchedWriter(socket: { cork(): void; uncork(): void; write(data: Buffer): boolean; readonly destroyed: boolean; readonly writableNeedDrain: boolean }): BatchedWriter {
  let holding = false;
  let spanBuf: Buffer | null = null;
  let spanStart = 0;
  let spanEnd = 0;
  const hold = (): void => {
    if (holding) return;
    holding = true;
    socket.cork();
    setImmediate(flush);
  };
  /** Write the messages held by their place. */
  const settle = (): void => {
    if (spanBuf === null) return;
    const bytes = spanBuf.subarray(spanStart, spanEnd);
    spanBuf = null;
    socket.write(bytes);
  };
  function flush(): void {
    if (!holding) return;
    settle();
    holding = false;
    if (!socket.destroyed) socket.uncork();
  }
  return {
    write: (data) => {
      hold();
      if (!(data instanceof Message)) {
        settle();
        return socket.write(data);
      }
      if (spanBuf === data.buf && spanEnd === data.start) {
        spanEnd = data.end;
      } else {
        if (spanBuf !== null) settle();
        spanBuf = data.buf;
        spanStart = data.start;
        spanEnd = data.end;
      }
      return !socket.writableNeedDrain;
    },
    flush,
  };
}

export interface BatchedWriter {
  /**
   * Bytes to send, or a received message to relay as it came (joined to the
   * one before it when they lie together). The answer: false once the
   * socket's own buffer is full (back-pressure).
   */
  write(data: Buffer | Message): boolean;
  /** Send what is held now. */
  flush(): void;
}

// ---- messages the front writes ----------------------------------------------------

export function message(type: string, ...parts: Array<Buffer | string | number>): Buffer {
  const buffers = parts.map((p) => (typeof p === 'number' ? int32(p) : typeof p === 'string' ? cstring(p) : p));
  const length = buffers.reduce((sum, b) => sum + b.length, 4);
  const header = Buffer.alloc(5);
  header.write(type, 0, 'latin1');
  header.writeInt32BE(length, 1);
  return Buffer.concat([header, ...buffers]);
}

export function int32(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(value);
  return b;
}

export function cstring(text: string): Buffer {
  return Buffer.concat([Buffer.from(text, 'utf8'), Buffer.from([0])]);
}

export const authenticationOk = (): Buffer => message('R', 0);
export const authenticationMd5 = (salt: Buffer): Buffer => message('R', 5, salt);
export const authenticationSasl = (mechanisms: readonly string[]): Buffer => message('R', 10, ...mechanisms, Buffer.from([0]));
export const authenticationSaslContinue = (data: string): Buffer => message('R', 11, Buffer.from(data));
export const authenticationSaslFinal = (data: string): Buffer => message('R', 12, Buffer.from(data));
export const backendKeyData = (pid: number, secret: Buffer): Buffer => message('K', pid, secret);
export const parameterStatus = (name: string, value: string): Buffer => message('S', name, value);
const READY: Readonly<Record<TransactionStatus, Buffer>> = { I: message('Z', Buffer.from('I')), T: message('Z', Buffer.from('T')), E: message('Z', Buffer.from('E')) };
/** ReadyForQuery: one of three constant messages (sent once per statement or pipeline, the front's most frequent). */
export const readyForQuery = (status: TransactionStatus): Buffer => READY[status];
export const commandComplete = (tag: string): Buffer => message('C', tag);
export const negotiateProtocolVersion = (minor: number, unrecognized: readonly string[]): Buffer => message('v', PROTOCOL_3_0 | minor, unrecognized.length, ...unrecognized);

/** What ReadyForQuery says: idle, in a transaction block, in a failed one. */
export type TransactionStatus = 'I' | 'T' | 'E';

/** An error's fields by their one-letter codes (S severity, C SQLSTATE, M message, D detail, H hint, ...). */
export type ErrorFields = ReadonlyMap<string, string>;

export function errorResponse(sqlstate: string, text: string, more: { detail?: string; hint?: string; severity?: 'ERROR' | 'FATAL' } = {}): Buffer {
  const fields = new Map<string, string>([['S', more.severity ?? 'ERROR'], ['V', more.severity ?? 'ERROR'], ['C', sqlstate], ['M', text]]);
  if (more.detail !== undefined) fields.set('D', more.detail);
  if (more.hint !== undefined) fields.set('H', more.hint);
  return fieldsMessage('E', fields);
}

export function fieldsMessage(type: 'E' | 'N', fields: ErrorFields): Buffer {
  const parts: Buffer[] = [];
  for (const [code, value] of fields) parts.push(Buffer.from(code, 'latin1'), cstring(value));
  parts.push(Buffer.from([0]));
  return message(type, ...parts);
}

/** An ErrorResponse's or NoticeResponse's fields. */
export function readFields(body: Buffer): Map<string, string> {
  const fields = new Map<string, string>();
  const reader = new BodyReader(body);
  while (!reader.done) {
    const code = reader.bytes(1)[0] as number;
    if (code === 0) break;
    fields.set(String.fromCharCode(code), reader.cstring());
  }
  return fields;
}
