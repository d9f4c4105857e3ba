// Operating errors of qsync: one base class with a literal `code` and the
// context an operator needs (peer, lsn, term, file, offset). Programmer
// errors are `AssertionFailed` (see assert.ts) and are never caught.
//
// This module is pure so that the core can return these values; the shells
// throw them.

export type ErrorCode =
  | 'RECORD_INVALID'
  | 'FRAME_TOO_LARGE'
  | 'JOURNAL_CORRUPT'
  | 'JOURNAL_LSN_ORDER'
  | 'JOURNAL_GAP'
  | 'JOURNAL_FAILED'
  | 'JOURNAL_CLOSED'
  | 'JOURNAL_QUEUE_FULL'
  | 'JOURNAL_LOCKED'
  | 'PG_LAUNCH'
  | 'PG_CHECK'
  | 'PG_MIGRATION'
  | 'PG_TABLE'
  | 'PG_APPLY'
  | 'LINK_CLOSED'
  | 'CONFIG'
  | 'NOT_LEADER'
  | 'STALE_TERM'
  | 'ROLLED_BACK'
  | 'OUTCOME_UNKNOWN'
  | 'LIMBO_FULL'
  | 'BAD_REQUEST'
  | 'PG_ERROR'
  | 'AUTH'
  | 'FORBIDDEN'
  | 'REJOINING';

export type ErrorContext = Readonly<Record<string, unknown>>;

export class QsyncError<C extends ErrorCode = ErrorCode> extends Error {
  readonly code: C;
  readonly context: ErrorContext;

  constructor(code: C, message: string, context: ErrorContext = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    this.context = context;
  }
}

/** A record or frame body that does not decode to a valid record. */
export class RecordInvalid extends QsyncError<'RECORD_INVALID'> {
  constructor(readonly field: string, readonly reason: string, options?: { cause?: unknown }) {
    super('RECORD_INVALID', `invalid record: ${field}: ${reason}`, { field, reason }, options);
  }
}

export class FrameTooLarge extends QsyncError<'FRAME_TOO_LARGE'> {
  constructor(bytes: number, bytesMax: number) {
    super('FRAME_TOO_LARGE', `frame of ${bytes} bytes exceeds the limit of ${bytesMax} bytes`, { bytes, bytesMax });
  }
}


/** The journal on disk is damaged somewhere recovery may not cut on its own. */
export class JournalCorrupt extends QsyncError<'JOURNAL_CORRUPT'> {
  constructor(segment: string, offset: number, reason: string, hint: string) {
    super('JOURNAL_CORRUPT', `journal segment ${segment} is corrupt at byte ${offset}: ${reason}. ${hint}`, { segment, offset, reason });
  }
}
