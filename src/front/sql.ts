// What the SQL front needs to know of a client's SQL, without parsing it:
// where one statement of a simple query ends (top-level semicolons, past
// quotes, dollar quotes and comments), and what kind of statement it is by
// its first words. The front acts on three kinds only: a COMMIT it must take
// over (the limbo decides it), a statement that may write a replicated table
// (it must run inside a transaction the front can commit), and one that
// PostgreSQL refuses inside a transaction block (it must not be wrapped).
// Everything it cannot split for sure it leaves whole, for PostgreSQL.

export type StatementKind =
  /** BEGIN, START TRANSACTION */
  | 'begin'
  /** COMMIT, END */
  | 'commit'
  /** COMMIT AND CHAIN: not taken over yet */
  | 'commitChain'
  /** ROLLBACK, ABORT (not TO SAVEPOINT, not PREPARED) */
  | 'rollback'
  /** reads: they write no table, so they run as they come */
  | 'read'
  /** session settings (SET, RESET, SHOW, DISCARD, DEALLOCATE): they neither read nor write a table */
  | 'setting'
  /** refused by PostgreSQL inside a transaction block (VACUUM, CREATE DATABASE, ...) */
  | 'outside'
  /** anything else: it may write */
  | 'write';

export interface SqlStatement {
  readonly text: string;
  readonly kind: StatementKind;
}

const IDENT = /[A-Za-z0-9_$\u0080-\uffff]/;

/**
 * The statements of a simple query, or null when the front cannot tell them
 * apart for sure (an unterminated quote or comment, a BEGIN ATOMIC body):
 * then the query goes to PostgreSQL whole.
 */
export function splitStatements(sql: string): SqlStatement[] | null {
  const out: SqlStatement[] = [];
  let start = 0;
  let i = 0;
  const n = sql.length;
  const push = (end: number): void => {
    const text = sql.slice(start, end);
    if (!blank(text)) out.push({ text, kind: classify(text) });
  };
  while (i < n) {
    const c = sql[i] as string;
    if (c === "'") {
      const escapes = i > 0 && /[eE]/.test(sql[i - 1] as string) && (i < 2 || !IDENT.test(sql[i - 2] as string));
      i = skipQuoted(sql, i, "'", escapes);
    } else if (c === '"') {
      i = skipQuoted(sql, i, '"', false);
    } else if (c === '-' && sql[i + 1] === '-') {
      const end = sql.indexOf('\n', i);
      i = end < 0 ? n : end + 1;
    } else if (c === '/' && sql[i + 1] === '*') {
      i = skipBlockComment(sql, i);
    } else if (c === '$' && (i === 0 || !IDENT.test(sql[i - 1] as string))) {
      const tag = /^\$([A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$/.exec(sql.slice(i, i + 70));
      if (tag === null) {
        i += 1;
      } else {
        const end = sql.indexOf(tag[0], i + tag[0].length);
        i = end < 0 ? -1 : end + tag[0].length;
      }
    } else if (c === ';') {
      push(i);
      start = i + 1;
      i += 1;
    } else {
      if ((c === 'b' || c === 'B') && /^begin\s+atomic\b/i.test(sql.slice(i, i + 20)) && (i === 0 || !IDENT.test(sql[i - 1] as string))) return null;
      i += 1;
    }
    if (i < 0) return null;
  }
  push(n);
  return out;
}

/** The index past a quoted string or identifier starting at `at`, or -1 when it does not end. */
function skipQuoted(sql: string, at: number, quote: string, backslashEscapes: boolean): number {
  let i = at + 1;
  while (i < sql.length) {
    const c = sql[i];
    if (backslashEscapes && c === '\\') {
      i += 2;
    } else if (c === quote) {
      if (sql[i + 1] === quote) i += 2;
      else return i + 1;
    } else {
      i += 1;
    }
  }
  return -1;
}

/** The index past a (nested) block comment starting at `at`, or -1 when it does not end. */
function skipBlockComment(sql: string, at: number): number {
  let depth = 0;
  let i = at;
  while (i < sql.length) {
    if (sql[i] === '/' && sql[i + 1] === '*') {
      depth += 1;
      i += 2;
    } else if (sql[i] === '*' && sql[i + 1] === '/') {
      depth -= 1;
      i += 2;
      if (depth === 0) return i;
    } else {
      i += 1;
    }
  }
  return -1;
}

/** Only whitespace and comments. */
function blank(text: string): boolean {
  return words(text, 1).length === 0;
}

/** The first `count` words of a statement, upper case, past whitespace, comments and opening parentheses. */
function words(text: string, count: number): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < text.length && out.length < count) {
    const c = text[i] as string;
    if (/\s|\(/.test(c)) {
      i += 1;
    } else if (c === '-' && text[i + 1] === '-') {
      const end = text.indexOf('\n', i);
      i = end < 0 ? text.length : end + 1;
    } else if (c === '/' && text[i + 1] === '*') {
      const end = skipBlockComment(text, i);
      i = end < 0 ? text.length : end;
    } else {
      const word = /^[A-Za-z_]+/.exec(text.slice(i, i + 64));
      if (word === null) {
        out.push(c);
        i += 1;
      } else {
        out.push(word[0].toUpperCase());
        i += word[0].length;
      }
    }
  }
  return out;
}

const READS = new Set(['SELECT', 'VALUES', 'TABLE', 'FETCH', 'MOVE', 'CLOSE', 'LISTEN', 'UNLISTEN', 'NOTIFY', 'LOAD', 'CHECKPOINT']);
const SETTINGS = new Set(['SET', 'SHOW', 'RESET', 'DISCARD', 'DEALLOCATE']);

/** Whether a statement of this kind reads or writes tables (a linearizable read index is taken before it). */
export function touchesData(kind: StatementKind): boolean {
  return kind === 'read' || kind === 'write' || kind === 'outside';
}

export function classify(text: string): StatementKind {
  const [first = '', second = '', third = '', fourth = ''] = words(text, 4);
  switch (first) {
    case 'BEGIN':
      return 'begin';
    case 'START':
      return second === 'TRANSACTION' ? 'begin' : 'write';
    case 'COMMIT':
    case 'END':
      if (second === 'PREPARED') return 'outside';
      return /\bAND\s+CHAIN\b/i.test(text) ? 'commitChain' : 'commit';
    case 'ROLLBACK':
    case 'ABORT':
      if (second === 'PREPARED') return 'outside';
      if (second === 'TO' || third === 'TO') return 'write';
      return 'rollback';
    case 'VACUUM':
    case 'CLUSTER':
      return 'outside';
    case 'REINDEX':
      return /\bCONCURRENTLY\b/i.test(text) || second === 'SYSTEM' || second === 'DATABASE' ? 'outside' : 'write';
    case 'ALTER':
      return second === 'SYSTEM' || (second === 'SUBSCRIPTION') ? 'outside' : 'write';
    case 'CREATE':
    case 'DROP':
      if (['DATABASE', 'TABLESPACE', 'SUBSCRIPTION'].includes(second)) return 'outside';
      if ((second === 'INDEX' || (second === 'UNIQUE' && third === 'INDEX')) && (third === 'CONCURRENTLY' || fourth === 'CONCURRENTLY')) return 'outside';
      return 'write';
    case 'EXPLAIN':
      return /\bANALY[SZ]E\b/i.test(text) ? 'write' : 'read';
    case 'COPY':
      return /\bFROM\b/i.test(text) ? 'write' : 'read';
    case 'SELECT':
      // SELECT ... INTO makes a table, which is local to this node: it needs no wrapping either.
      return 'read';
    default:
      return SETTINGS.has(first) ? 'setting' : READS.has(first) ? 'read' : 'write';
  }
}
