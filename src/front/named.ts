// What a client's extended-protocol messages run (front/session.ts asks):
// the kind of each named (or unnamed) statement it parsed and portal it
// bound, so that an Execute of COMMIT is taken over and a pipeline that may
// write is opened as a transaction first. Bounded: PostgreSQL keeps no limit
// on a session's prepared statements, the front's bookkeeping does.
import { classify, type StatementKind } from './sql.js';
import { BodyReader, type Message } from './wire.js';

/** Named statements and portals a client may have at once. */
export const NAMED_MAX = 10_000;

const P = 'P'.charCodeAt(0);
const B = 'B'.charCodeAt(0);
const C = 'C'.charCodeAt(0);
const E = 'E'.charCodeAt(0);
const S = 'S'.charCodeAt(0);

export class NamedStatements {
  readonly #statements = new Map<string, StatementKind>();
  readonly #portals = new Map<string, StatementKind>();

  /** Take in one client message; for an Execute, the kind of statement it runs. `parsed` sees each Parse's text. */
  track(m: Message, parsed: (sql: string) => void = () => undefined): StatementKind | null {
    const body = new BodyReader(m.body);
    if (m.type === P) {
      const name = body.cstring();
      const text = body.cstring();
      parsed(text);
      this.#remember(this.#statements, name, classify(text));
    } else if (m.type === B) {
      const portal = body.cstring();
      this.#remember(this.#portals, portal, this.#statements.get(body.cstring()) ?? 'write');
    } else if (m.type === C) {
      const what = body.bytes(1).toString('latin1');
      (what === 'S' ? this.#statements : this.#portals).delete(body.cstring());
    } else if (m.type === E) {
      return this.#portals.get(body.cstring()) ?? 'write';
    }
    return null;
  }

  /** What a pipeline of `first` and then `rest` runs, as far as it has arrived: its Binds' statements, up to its Sync. */
  pipelineKinds(first: Message, rest: readonly Message[] = []): StatementKind[] {
    const kinds: StatementKind[] = [];
    const parsed = new Map<string, StatementKind>();
    for (let i = -1; i < rest.length; i += 1) {
      const m = i < 0 ? first : (rest[i] as Message);
      if (m.type === S) break;
      const body = new BodyReader(m.body);
      if (m.type === P) {
        const name = body.cstring();
        parsed.set(name, classify(body.cstring()));
      } else if (m.type === B) {
        body.cstring();
        const statement = body.cstring();
        kinds.push(parsed.get(statement) ?? this.#statements.get(statement) ?? 'write');
      }
    }
    return kinds;
  }

  #remember(map: Map<string, StatementKind>, name: string, kind: StatementKind): void {
    if (!map.has(name) && map.size >= NAMED_MAX) throw Object.assign(new Error(`a session of the qsync SQL port holds at most ${NAMED_MAX} named statements and portals`), { sqlstate: '54000' });
    map.set(name, kind);
  }
}
