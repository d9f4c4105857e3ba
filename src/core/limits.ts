// Every bound of qsync in one place ("put a limit on everything").
// Hitting one gives back-pressure or a typed error, never unbounded growth.

export const limits = {
  /** Largest frame body on disk or on the wire. A TXN bigger than this is refused. */
  frameBytesMax: 16 * 1024 * 1024,
  /** Largest PostgreSQL prepared-transaction identifier (PostgreSQL's own limit is 200 bytes). */
  gidBytesMax: 200,
  /** Longest table name, schema-qualified and quoted (2 × 63-byte identifiers plus quoting). */
  tableNameBytesMax: 256,
  /** A schema change's SQL (`qsync ddl`). */
  ddlBytesMax: 64 * 1024,
  idempotencyKeyBytesMax: 256,
  /** Changes (table × operation groups) in one TXN record. */
  txnChangesMax: 10_000,
  /** Members named in one CONFIG record. */
  membersMax: 31,
  /** Bytes accepted by the journal but not yet durable; past this, append fails with JOURNAL_QUEUE_FULL. */
  journalQueueBytesMax: 256 * 1024 * 1024,
  /** Bytes written by one group-commit batch (one write, one fdatasync). */
  journalBatchBytesMax: 8 * 1024 * 1024,
  /** Default size after which the journal starts a new segment. */
  journalSegmentBytesDefault: 64 * 1024 * 1024,
  /** Pending sync transactions in the limbo; past this, a new one is refused (back-pressure). Keep below max_prepared_transactions. */
  limboEntriesMax: 100,
  /** Messages received on a link and not yet handled; past this the socket is paused. */
  linkQueueMessagesMax: 1024,
  /** Time a peer has to complete the handshake. */
  handshakeTimeoutMs: 5_000,
  /** Bytes a journal cursor reads from disk at a time. */
  journalCursorChunkBytes: 1024 * 1024,
} as const;
