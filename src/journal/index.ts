export { Journal, JournalError, type JournalOptions, type JournalStats, type RecoveryReport } from './journal.js';
export { JournalCursor, type CursorOptions } from './cursor.js';
export type { JournalCut } from './recovery.js';
export type { RaftState } from './segment.js';
