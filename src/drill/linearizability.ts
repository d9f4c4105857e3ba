// A linearizability checker for compare-and-set registers: the Wing-Gong
// search as Lowe improved it (memoise each pair of "operations linearized so
// far" and model state; a state seen once is never searched again), run per
// key, since registers on different keys are independent (P-compositionality),
// as Porcupine does.
//
// An operation whose outcome is unknown (the client never heard) stays open
// to the end: its return is placed after every other, and any output is
// accepted, so the search may linearize it anywhere after its call or, what
// is the same, after everything (never happened). A search that runs out of
// its step budget answers 'unknown', never 'valid'.
//
// Pure: no clock, no I/O.

export interface RegisterOp {
  readonly id: number;
  readonly key: string;
  /** read: output is the value read; write: sets value; cas: [expected, new], output is the value found. */
  readonly f: 'read' | 'write' | 'cas';
  readonly value: number | readonly [number, number] | null;
  /** The value the operation saw (read, cas); null when unknown. */
  readonly output: number | null;
  readonly invokeMs: number;
  /** null: the outcome is unknown; the operation stays open to the end. */
  readonly completeMs: number | null;
}

export type LinearizabilityVerdict =
  | { readonly valid: true; readonly keys: number; readonly steps: number }
  | { readonly valid: false; readonly key: string; readonly op: RegisterOp; readonly linearized: readonly RegisterOp[]; readonly steps: number }
  | { readonly valid: 'unknown'; readonly key: string; readonly reason: string; readonly steps: number };

/** A register's next state after `op`, or null when op's output cannot have been seen in state `value`. */
function step(value: number, op: RegisterOp): number | null {
  const unknown = op.completeMs === null;
  switch (op.f) {
    case 'read':
      return unknown || op.output === value ? value : null;
    case 'write':
      return op.value as number;
    case 'cas': {
      const [expected, next] = op.value as readonly [number, number];
      if (!unknown && op.output !== value) return null;
      return value === expected ? next : value;
    }
  }
}

interface Entry {
  readonly op: RegisterOp;
  readonly index: number;
  readonly call: boolean;
  /** The call's return entry. */
  match: Entry | null;
  prev: Entry | null;
  next: Entry | null;
}

/** Check every key's history; the first key that fails (or exhausts the budget) decides. */
export function checkRegisters(ops: readonly RegisterOp[], options: { readonly initial?: number; readonly stepsMax?: number } = {}): LinearizabilityVerdict {
  const byKey = new Map<string, RegisterOp[]>();
  for (const op of ops) byKey.set(op.key, [...(byKey.get(op.key) ?? []), op]);
  let steps = 0;
  for (const [key, keyOps] of [...byKey].sort(([a], [b]) => a.localeCompare(b))) {
    const verdict = checkKey(key, keyOps, options.initial ?? 0, (options.stepsMax ?? 5_000_000) - steps);
    steps += verdict.steps;
    if (verdict.valid !== true) return { ...verdict, steps };
  }
  return { valid: true, keys: byKey.size, steps };
}

function checkKey(key: string, ops: readonly RegisterOp[], initial: number, stepsMax: number): LinearizabilityVerdict {
  // Calls and returns in time order; at a tie, calls first (the operations overlap: more freedom, never a false alarm).
  const events: Array<{ at: number; call: boolean; index: number }> = [];
  ops.forEach((op, index) => {
    events.push({ at: op.invokeMs, call: true, index });
    events.push({ at: op.completeMs ?? Number.POSITIVE_INFINITY, call: false, index });
  });
  events.sort((a, b) => a.at - b.at || Number(b.call) - Number(a.call) || a.index - b.index);
  const head: Entry = { op: ops[0] as RegisterOp, index: -1, call: false, match: null, prev: null, next: null };
  const calls = new Map<number, Entry>();
  let last = head;
  for (const e of events) {
    const entry: Entry = { op: ops[e.index] as RegisterOp, index: e.index, call: e.call, match: null, prev: last, next: null };
    last.next = entry;
    last = entry;
    if (e.call) calls.set(e.index, entry);
    else (calls.get(e.index) as Entry).match = entry;
  }
  const lift = (entry: Entry): void => {
    for (const e of [entry, entry.match as Entry]) {
      (e.prev as Entry).next = e.next;
      if (e.next !== null) e.next.prev = e.prev;
    }
  };
  const unlift = (entry: Entry): void => {
    for (const e of [entry.match as Entry, entry]) {
      (e.prev as Entry).next = e;
      if (e.next !== null) e.next.prev = e;
    }
  };
  const seen = new Set<string>();
  const stack: Array<{ entry: Entry; state: number }> = [];
  let linearized = 0n;
  let state = initial;
  let entry = head.next;
  let steps = 0;
  let deepest: { op: RegisterOp; linearized: RegisterOp[] } | null = null;
  while (entry !== null) {
    steps += 1;
    if (steps > stepsMax) return { valid: 'unknown', key, reason: `search budget of ${stepsMax} steps exhausted on key ${key} (${ops.length} operations)`, steps };
    if (entry.call) {
      const next = step(state, entry.op);
      if (next !== null) {
        const after = linearized | (1n << BigInt(entry.index));
        const memo = `${after.toString(36)}:${next}`;
        if (!seen.has(memo)) {
          seen.add(memo);
          stack.push({ entry, state });
          state = next;
          linearized = after;
          lift(entry);
          entry = head.next;
          continue;
        }
      }
      entry = entry.next;
      continue;
    }
    // A return whose call is not linearized yet: undo the last choice.
    if (deepest === null || stack.length >= deepest.linearized.length) deepest = { op: entry.op, linearized: stack.map((s) => s.entry.op) };
    const top = stack.pop();
    if (top === undefined) return { valid: false, key, op: deepest.op, linearized: deepest.linearized, steps };
    linearized &= ~(1n << BigInt(top.entry.index));
    state = top.state;
    unlift(top.entry);
    entry = top.entry.next;
  }
  return { valid: true, keys: 1, steps };
}
