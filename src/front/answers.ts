// What the SQL front says to a client in PostgreSQL's terms: which node
// takes writes (the parameters libpq's target_session_attrs reads), the
// fence's errors as SQLSTATEs a driver understands, and how a commit that
// did not commit ended.
import { QsyncError } from '../core/errors.js';
import { errorResponse, fieldsMessage, parameterStatus, readFields, type Message } from './wire.js';

/** The ParameterStatus values that tell libpq and JDBC which node takes writes (target_session_attrs=read-write). */
export function leadershipParameters(leader: boolean): Array<[string, string]> {
  const value = leader ? 'off' : 'on';
  return [['default_transaction_read_only', value], ['in_hot_standby', value]];
}

const PARAMETER = 'S'.charCodeAt(0);

/** A ParameterStatus from PostgreSQL, with the front's own value where leadership decides it. */
export function rewriteParameter(m: Message, leader: boolean): Buffer {
  if (m.type !== PARAMETER) return m.raw;
  const [name] = m.body.toString('utf8').split('\0');
  const own = leadershipParameters(leader).find(([n]) => n === name);
  return own === undefined ? m.raw : parameterStatus(own[0], own[1]);
}

/** The fence's errors (migrations 0001, 0003) as a PostgreSQL client understands them; others as they came. */
export function rewriteError(m: Message, leaderSql: string | null): Buffer {
  const fields = readFields(m.body);
  const code = fields.get('C');
  if (code === 'QS001') {
    fields.set('C', '25006');
    fields.set('H', leaderSql === null ? 'This node does not take writes to sync tables; connect to the leader (libpq: target_session_attrs=read-write).'
      : `Write sync tables through the leader's SQL port, ${leaderSql} (libpq: list every node and set target_session_attrs=read-write).`);
  } else if (code === 'QS002') {
    fields.set('C', '40001');
  } else if (code === 'QS005') {
    fields.set('H', 'Through the qsync SQL port, a write that runs as a pipeline after a read needs BEGIN first; through PostgreSQL directly, replicated tables cannot be written.');
  } else {
    return m.raw;
  }
  return fieldsMessage('E', fields);
}

/** SQLSTATEs of the write path's outcomes (README, The SQL port). */
const OUTCOMES: Readonly<Record<string, string>> = { ROLLED_BACK: '40000', OUTCOME_UNKNOWN: '08007', LIMBO_FULL: '53000', NOT_LEADER: '25006', STALE_TERM: '40001' };

/** A commit that did not commit, as the client hears it. */
export function commitError(error: unknown, leaderSql: () => string | null): Buffer {
  const message = (error as { message?: string }).message ?? String(error);
  if (message.includes('idempotency_pkey')) {
    return errorResponse('23505', 'qsync: a transaction with this idempotency key has already committed; it is not applied twice', { hint: 'Ask what it did with SELECT * FROM qsync.outcome(\'<key>\').' });
  }
  if (error instanceof QsyncError) {
    const hint = error.code === 'NOT_LEADER' || error.code === 'STALE_TERM' ? leaderSql() : null;
    const sqlstate = OUTCOMES[error.code] ?? (typeof error.context.sqlstate === 'string' ? error.context.sqlstate : 'XX000');
    if (sqlstate === '0A000' && /PREPARE/.test(message)) {
      // PREPARE TRANSACTION's own refusals (temporary objects, LISTEN/NOTIFY, WITH HOLD cursors, exported snapshots).
      return errorResponse(sqlstate, `qsync: ${message}; the transaction was rolled back`, {
        hint: 'A SERIALIZABLE transaction that writes a sync table waits for its quorum as a prepared transaction (every one does with syncHold prepare), which PostgreSQL refuses for one that used temporary tables, LISTEN/NOTIFY or WITH HOLD cursors: do those in a transaction of their own.',
      });
    }
    return errorResponse(sqlstate, `qsync: ${message}`, hint === null ? {} : { hint: `The leader's SQL port is ${hint}.` });
  }
  const code = (error as { code?: unknown }).code;
  return errorResponse(typeof code === 'string' && code.length === 5 ? code : 'XX000', message);
}
