// Logs: pino, one JSON line per event, bound to the node (and later term and role).
import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger };

export function createLogger(bindings: Record<string, unknown>, destination?: DestinationStream, level = process.env.QSYNC_LOG_LEVEL ?? 'info'): Logger {
  const options = { level, base: bindings };
  return destination === undefined ? pino(options) : pino(options, destination);
}
