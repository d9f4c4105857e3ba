// How the SQL front reads a client's SQL (front/sql.ts): where a simple
// query's statements end, and what each one is. A wrong split would send
// PostgreSQL half a statement, or let a COMMIT through that the limbo must
// decide; a wrong kind would leave a write outside the front's transaction.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { classify, splitStatements } from '../../src/front/sql.js';

describe('splitting a simple query', () => {
  it('ends statements at top-level semicolons only', () => {
    const sql = `INSERT INTO t VALUES ('a;b', E'c\\';d', $$e;f$$, $tag$ g;$$; $tag$, "h;i"); -- j;k
      /* l; /* m; */ n; */ COMMIT;;  SELECT 1`;
    const parts = splitStatements(sql);
    expect(parts?.map((p) => p.kind)).toEqual(['write', 'commit', 'read']);
    expect(parts?.[0]?.text).toContain("$tag$ g;$$; $tag$");
    expect(parts?.[1]?.text.trim()).toMatch(/COMMIT$/);
  });

  it('gives up (null) where it cannot be sure: an unterminated quote or comment, a BEGIN ATOMIC body', () => {
    for (const sql of ["SELECT 'a; COMMIT", 'SELECT "a; COMMIT', 'SELECT $$a; COMMIT', 'SELECT 1 /* ; COMMIT',
      'CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END; COMMIT']) {
      expect(splitStatements(sql), sql).toBeNull();
    }
  });

  it('keeps an empty query empty, and a parameter $1 is no dollar quote', () => {
    expect(splitStatements('')).toEqual([]);
    expect(splitStatements(' ; -- nothing\n')).toEqual([]);
    expect(splitStatements('SELECT $1; COMMIT')?.map((p) => p.kind)).toEqual(['read', 'commit']);
    expect(splitStatements('SELECT a$b$c FROM t; COMMIT')?.map((p) => p.kind)).toEqual(['read', 'commit']);
  });

  it('gives back exactly the statements it was given, whatever their quoted contents (property)', () => {
    const quoted = fc.oneof(
      fc.string().map((s) => `'${s.replaceAll("'", "''")}'`),
      fc.string().map((s) => `"${s.replaceAll('"', '""') || 'x'}"`),
      fc.string().filter((s) => !s.includes('$q$')).map((s) => `$q$${s}$q$`),
      fc.string().filter((s) => !/[*/]/.test(s)).map((s) => `/*${s}*/`),
    );
    const statement = fc.tuple(fc.constantFrom('SELECT ', 'INSERT INTO t VALUES (', 'UPDATE t SET a = '), fc.array(quoted, { maxLength: 4 }))
      .map(([head, parts]) => `${head}${parts.join(' || ')}`);
    fc.assert(fc.property(fc.array(statement, { minLength: 1, maxLength: 5 }), (statements) => {
      const parts = splitStatements(statements.join(';'));
      expect(parts?.map((p) => p.text)).toEqual(statements);
    }), { numRuns: 300 });
  });
});

describe('what a statement is', () => {
  it.each([
    ['BEGIN', 'begin'], ['begin isolation level serializable', 'begin'], ['START TRANSACTION READ WRITE', 'begin'],
    ['COMMIT', 'commit'], ['end work', 'commit'], ['COMMIT AND CHAIN', 'commitChain'], ['COMMIT AND NO CHAIN', 'commit'],
    ["COMMIT PREPARED 'x'", 'outside'], ['ROLLBACK', 'rollback'], ['ABORT', 'rollback'], ['ROLLBACK TO SAVEPOINT a', 'write'], ['ROLLBACK WORK TO a', 'write'],
    ["ROLLBACK PREPARED 'x'", 'outside'], ['VACUUM t', 'outside'], ['CREATE DATABASE d', 'outside'], ['CREATE INDEX CONCURRENTLY i ON t (a)', 'outside'],
    ['CREATE UNIQUE INDEX CONCURRENTLY i ON t (a)', 'outside'], ['CREATE INDEX i ON t (a)', 'write'], ['REINDEX TABLE CONCURRENTLY t', 'outside'], ['ALTER SYSTEM SET x = 1', 'outside'],
    ['SELECT 1', 'read'], ['(SELECT 1)', 'read'], ['/* hi */ -- there\n SELECT 1', 'read'], ['SHOW x', 'setting'], ['SET x = 1', 'setting'], ['RESET ALL', 'setting'], ['DISCARD ALL', 'setting'], ['VALUES (1)', 'read'],
    ['EXPLAIN SELECT 1', 'read'], ['EXPLAIN ANALYZE DELETE FROM t', 'write'], ['COPY t TO STDOUT', 'read'], ['COPY t FROM STDIN', 'write'],
    ['WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x', 'write'], ['INSERT INTO t VALUES (1)', 'write'], ['CALL p()', 'write'], ['SAVEPOINT a', 'write'],
  ] as const)('%s is %s', (sql, kind) => {
    expect(classify(sql)).toBe(kind);
  });
});
