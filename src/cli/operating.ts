// An error of the machine or the setup (a port in use, a directory that
// cannot be written, a PostgreSQL that does not answer), said as one line
// with its fix, not a stack trace: the operator can act on it. A programmer
// error is none of these and keeps its stack.
import { QsyncError } from '../core/errors.js';

interface SystemError {
  readonly code?: string;
  readonly syscall?: string;
  readonly address?: string;
  readonly port?: number;
  readonly path?: string;
  readonly message?: string;
}

/** The one-line message and fix for an operating error, or null when `error` is not one. */
export function operatingError(error: unknown): string | null {
  if (error instanceof QsyncError) return error.message;
  const e = error as SystemError;
  const where = e.port === undefined ? e.address ?? '' : `${e.address ?? ''}:${e.port}`;
  switch (e.code) {
    case 'EADDRINUSE':
      return `${where} is in use by another process: stop it, or give this node other ports (--peer-port, --client-port, --admin-port, --sql-port)`;
    case 'EADDRNOTAVAIL':
      return `${where} is not an address of this machine: bind to one of its own (--peer-host, --client-host, --admin-host, --sql-host)`;
    case 'EACCES':
    case 'EPERM':
      return e.syscall === 'listen' || e.syscall === 'bind'
        ? `this user may not listen on ${where}: use a port above 1023, or run with the right to bind it`
        : `this user may not use ${e.path ?? 'a file it needs'}: give it write access (or run as its owner), or point --data-dir / --dir elsewhere`;
    case 'ENOSPC':
      return `the disk holding ${e.path ?? 'the data directory'} is full: free space, or move --data-dir / --dir to a disk with room`;
    case 'EROFS':
      return `${e.path ?? 'the data directory'} is on a read-only file system: point --data-dir / --dir at a writable one`;
    case 'ECONNREFUSED':
      return `nothing answers at ${where}: start PostgreSQL there, or fix --pg-url (QSYNC_PG_URL)`;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `the host of ${e.message?.split(' ').at(-1) ?? 'an address'} cannot be resolved: fix the host name in --pg-url or --peers`;
    case 'ETIMEDOUT':
      return `${where} did not answer in time: check that the host is up and that no firewall drops the connection`;
    case '28P01':
    case '28000':
      return `PostgreSQL refused the sidecar's login: ${e.message ?? ''}; fix the user or password in --pg-url (QSYNC_PG_URL, PGPASSWORD, ~/.pgpass)`;
    case '3D000':
      return `${e.message ?? 'the database does not exist'}: create it, or name another in --pg-url`;
    default:
      return null;
  }
}
