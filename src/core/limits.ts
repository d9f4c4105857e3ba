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
  /**
   * How long a batch of CONFIRMs alone waits for another record to share its
   * fsync (RFC 0020): under one client, the next write's TXN comes within a
   * few milliseconds, and a CONFIRM then costs no fsync of its own.
   */
  journalConfirmWaitMs: 5,
  /** Default size after which the journal starts a new segment. */
  journalSegmentBytesDefault: 64 * 1024 * 1024,
  /** Pending sync transactions in the limbo; past this, a new one is refused (back-pressure). Keep below max_prepared_transactions. */
  limboEntriesMax: 100,
  /** Messages received on a link and not yet handled; past this the socket is paused. */
  linkQueueMessagesMax: 1024,
  /**
   * Bytes of records from one peer handed to the node and not yet durable and
   * applied; past this the subscriber reads no further until they are. Well
   * below journalQueueBytesMax, so that a burst from peers (a catch-up of large
   * records, or a hostile one) waits instead of overflowing the journal's queue.
   */
  peerInFlightBytesMax: 64 * 1024 * 1024,
  /**
   * Bytes of journaled records waiting to reach PostgreSQL here (the apply
   * queue: behind a sync TXN the limbo has not decided, or a slow apply);
   * past this, records from peers are taken no further until some are applied.
   */
  applyQueueBytesMax: 64 * 1024 * 1024,
  /** Records, and their bytes, that one PostgreSQL transaction of the apply queue commits together. */
  applyBatchRecordsMax: 256,
  applyBatchBytesMax: 4 * 1024 * 1024,
  /**
   * How long a relay holds a third node's record (the leader's, relayed by a
   * follower) for its subscriber's ack before sending it anyway, and how many
   * it holds at most (RFC 0012): no copy while the subscriber hears the writer
   * directly, one delay late when it does not.
   */
  relayThirdPartyDelayMs: 100,
  relayHeldMax: 4_096,
  /** Time a peer has to complete the handshake. */
  handshakeTimeoutMs: 5_000,
  /**
   * Bytes a connection may send before it has authenticated: what a peer's
   * hello or a client's auth request needs (a 1 KiB password at most), no
   * more. Past it the connection is closed; nothing larger is ever buffered
   * for a stranger.
   */
  handshakeBytesMax: 2 * 1024,
  /** Connections a port holds at once (peer and client ports); past this a new one is closed at once. */
  connectionsMax: 1_024,
  /** Connections not yet authenticated on one port at once, from all addresses / from one address. */
  unauthenticatedMax: 64,
  unauthenticatedPerAddressMax: 16,
  /**
   * The SQL port's caps (front/server.ts): a driver's pool opens its
   * connections all at once, from one address, so its login burst is larger
   * than the client port's; each is still bounded, and an authenticated
   * session costs a PostgreSQL connection, which max_connections bounds too.
   */
  sqlPort: { connectionsMax: 1_024, unauthenticatedMax: 256, unauthenticatedPerAddressMax: 128 },
  /** Authentications checked at once on the client port (each is a PostgreSQL login). */
  authConcurrentMax: 4,
  /** A failed authentication delays the next one from that address: doubling from the first, up to the last. */
  authBackoffMs: [50, 2_000] as const,
  /** Addresses whose failed authentications are remembered (the oldest is forgotten first). */
  authAddressesMax: 4_096,
  /** Connections the admin HTTP interface holds at once, and how long it waits for headers, a request, and between keep-alive requests. */
  adminConnectionsMax: 64,
  adminHeadersTimeoutMs: 5_000,
  adminRequestTimeoutMs: 30_000,
  adminKeepAliveTimeoutMs: 5_000,
  /** Bytes of a request body the admin interface reads. */
  adminBodyBytesMax: 64 * 1024,
  /** Bytes a journal cursor reads from disk at a time. */
  journalCursorChunkBytes: 1024 * 1024,
  /** The journal's last durable batches kept in memory for cursors at the tail (RFC 0022). */
  journalRecentBytesMax: 1024 * 1024,
} as const;
