// The drill's checkers, each a pure function of the history and what the
// nodes hold after healing (DESIGN.md §2):
//   register  linearizable (linearizability.ts)
//   set       every acknowledged insert on every node; none told it failed
//   bank      the total constant and no account negative, in every read and on every node
//   async     every acknowledged async insert on every node
//   replicas  every replicated table identical on all nodes (ordered hash), nothing prepared
import { checkRegisters, type LinearizabilityVerdict, type RegisterOp } from './linearizability.js';
import { BANK_ACCOUNTS, BANK_BALANCE, type Op } from './workload.js';

export interface CheckResult {
  readonly name: string;
  readonly valid: boolean | 'unknown';
  readonly summary: string;
  readonly details?: unknown;
}

/** What one node holds after healing. */
export interface NodeImage {
  readonly replica: number;
  readonly setIds: readonly string[];
  readonly asyncIds: readonly string[];
  readonly bank: ReadonlyArray<{ readonly id: string; readonly balance: number }>;
  /** Table name → md5 of its rows in primary-key order. */
  readonly hashes: Readonly<Record<string, string>>;
  readonly prepared: readonly string[];
}

const sample = (items: readonly string[]): string => `${items.slice(0, 5).join(', ')}${items.length > 5 ? `, … (${items.length})` : ''}`;

export function checkRegister(ops: readonly Op[], stepsMax?: number): CheckResult {
  const history: RegisterOp[] = ops
    .filter((op) => op.workload === 'register' && op.result !== 'fail')
    .map((op) => ({ id: op.id, key: op.key, f: op.f as RegisterOp['f'], value: op.value, output: op.result === 'ok' ? op.output : null, invokeMs: op.invokeMs, completeMs: op.result === 'ok' ? op.completeMs : null }));
  const verdict: LinearizabilityVerdict = checkRegisters(history, stepsMax === undefined ? {} : { stepsMax });
  const open = history.filter((op) => op.completeMs === null).length;
  if (verdict.valid === true) return { name: 'register', valid: true, summary: `linearizable: ${history.length} operations on ${verdict.keys} keys (${open} with unknown outcome), ${verdict.steps} search steps` };
  if (verdict.valid === 'unknown') return { name: 'register', valid: 'unknown', summary: verdict.reason };
  const o = verdict.op;
  return {
    name: 'register', valid: false,
    summary: `NOT linearizable on key ${verdict.key}: no order explains ${o.f} ${JSON.stringify(o.value)} → ${o.output} (op ${o.id}, ${o.invokeMs}-${o.completeMs} ms) after ${verdict.linearized.length} operations`,
    details: { key: verdict.key, op: o, linearized: verdict.linearized.slice(-10) },
  };
}

export function checkSet(ops: readonly Op[], images: readonly NodeImage[]): CheckResult {
  const inserts = ops.filter((op) => op.f === 'insert');
  const acked = inserts.filter((op) => op.result === 'ok').map((op) => op.key);
  const failed = new Set(inserts.filter((op) => op.result === 'fail').map((op) => op.key));
  const problems: string[] = [];
  for (const image of images) {
    const present = new Set(image.setIds);
    const lost = acked.filter((id) => !present.has(id));
    const resurrected = [...present].filter((id) => failed.has(id));
    if (lost.length > 0) problems.push(`node ${image.replica} lost ${lost.length} acknowledged inserts: ${sample(lost)}`);
    if (resurrected.length > 0) problems.push(`node ${image.replica} holds ${resurrected.length} inserts whose clients were told they failed: ${sample(resurrected)}`);
  }
  const unknown = inserts.filter((op) => op.result === 'unknown').length;
  if (problems.length > 0) return { name: 'set', valid: false, summary: problems.join('; ') };
  return { name: 'set', valid: true, summary: `${acked.length} acknowledged inserts on every node, none of ${failed.size} failed ones anywhere (${unknown} unknown)` };
}

export function checkBank(ops: readonly Op[], images: readonly NodeImage[]): CheckResult {
  const total = BANK_ACCOUNTS * BANK_BALANCE;
  const problems: string[] = [];
  const reads = ops.filter((op) => op.f === 'balance' && op.result === 'ok');
  const bad = reads.filter((op) => op.output !== total);
  if (bad.length > 0) problems.push(`${bad.length} of ${reads.length} reads saw a total other than ${total} (or a negative balance): ${bad.slice(0, 3).map((op) => `${op.output} at ${op.completeMs} ms on node ${op.node}`).join(', ')}`);
  for (const image of images) {
    const sum = image.bank.reduce((s, a) => s + a.balance, 0);
    const negative = image.bank.filter((a) => a.balance < 0);
    if (image.bank.length !== BANK_ACCOUNTS || sum !== total) problems.push(`node ${image.replica} holds ${image.bank.length} accounts totalling ${sum}, not ${BANK_ACCOUNTS} totalling ${total}`);
    if (negative.length > 0) problems.push(`node ${image.replica} has negative balances: ${negative.map((a) => `${a.id}=${a.balance}`).join(', ')}`);
  }
  const transfers = ops.filter((op) => op.f === 'transfer' && op.result === 'ok').length;
  if (problems.length > 0) return { name: 'bank', valid: false, summary: problems.join('; ') };
  return { name: 'bank', valid: true, summary: `total ${total} kept in ${reads.length} reads and on every node after ${transfers} acknowledged transfers; no negative balance` };
}

export function checkAsync(ops: readonly Op[], images: readonly NodeImage[]): CheckResult {
  const acked = ops.filter((op) => op.f === 'insert-async' && op.result === 'ok').map((op) => op.key);
  const problems = images.flatMap((image) => {
    const present = new Set(image.asyncIds);
    const missing = acked.filter((id) => !present.has(id));
    return missing.length > 0 ? [`node ${image.replica} misses ${missing.length} acknowledged async inserts: ${sample(missing)}`] : [];
  });
  if (problems.length > 0) return { name: 'async', valid: false, summary: problems.join('; ') };
  return { name: 'async', valid: true, summary: `${acked.length} acknowledged async inserts replicated to every node` };
}

export function checkReplicas(images: readonly NodeImage[]): CheckResult {
  const problems: string[] = [];
  const first = images[0];
  for (const image of images) {
    if (image.prepared.length > 0) problems.push(`node ${image.replica} still holds prepared transactions: ${sample(image.prepared)}`);
    if (first === undefined || image === first) continue;
    for (const [table, hash] of Object.entries(first.hashes)) {
      if (image.hashes[table] !== hash) problems.push(`${table} differs between node ${first.replica} and node ${image.replica}`);
    }
  }
  if (problems.length > 0) return { name: 'replicas', valid: false, summary: problems.join('; ') };
  return { name: 'replicas', valid: true, summary: `${Object.keys(first?.hashes ?? {}).length} replicated tables identical on ${images.length} nodes; nothing left prepared` };
}
