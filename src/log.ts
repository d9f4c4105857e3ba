// Logs: pino, one JSON line per event, bound to the node; `context` adds what
// changes over time (its term and role) to every line. `prettyLine` turns
// such a line into one for a terminal (`qsync cluster up`).
import { levels, pino, type DestinationStream, type Logger } from 'pino';
import pinoPretty from 'pino-pretty';

export type { Logger };

export function createLogger(bindings: Record<string, unknown>, destination?: DestinationStream, level = process.env.QSYNC_LOG_LEVEL ?? 'info', context?: () => Record<string, unknown>): Logger {
  const options = { level, base: bindings, ...(context === undefined ? {} : { mixin: context }) };
  return destination === undefined ? pino(options) : pino(options, destination);
}

/**
 * A formatter for a terminal: a JSON log line at `level` or above becomes
 * one coloured line ("12:00:01 INFO  node 1 term 3 leader: message key=value");
 * below it, null; a line that is not JSON comes back as it is.
 */
export function prettyLines(level: string, colorize: boolean): (line: string) => string | null {
  const format = pinoPretty.prettyFactory({
    colorize, singleLine: true, translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname,node,term,role',
    messageFormat: (log, messageKey) => `node ${String(log.node)} term ${String(log.term ?? '-')} ${String(log.role ?? '-')}: ${String(log[messageKey])}`,
  });
  const min = levels.values[level] ?? levels.values.info ?? 30;
  return (line) => {
    let parsed: { level?: number };
    try {
      parsed = JSON.parse(line) as { level?: number };
    } catch {
      return line;
    }
    if ((parsed.level ?? 30) < min) return null;
    return format(parsed).trimEnd();
  };
}
