export { launchPostgres, externalPostgres, freePort, freePorts, DEFAULT_SETTINGS, PostgresLaunchError, type PgServer, type PgConnection, type LaunchOptions } from './launcher.js';
export { migrate, readMigrations, MigrationError, MIGRATIONS_DIR } from './migrate.js';
export { setTableMode, describeTable, loadTables, runDdl, shapeMismatch, TableError, type CopiedChunk, type TableInfo, type TableModeChange, type TableModeOptions } from './tables.js';
export { capture, readCaptureKey, type Captured, type CaptureStamp } from './capture.js';
export { Applier, ApplyError, appliedLsns, appliedVclock, compactApplied, type ApplyOutcome } from './apply.js';
export { listPrepared, commitPrepared, rollbackPrepared, reconcile, type JournalVerdict, type PreparedEntry, type ReconcileReport, type PreparedStore } from './twophase.js';
export { checkServer, PgCheckError, SERVER_VERSION_MIN } from './checks.js';
export { runLeaderWrite, type LeaderWrite, type LeaderOutcome } from './leader.js';
export { type SnapshotLoad, type SnapshotPart, type SnapshotTable } from './snapshot.js';
