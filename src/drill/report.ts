// A drill's report: a text summary for the terminal, the whole result as
// JSON, and an HTML page with two SVG charts (throughput and latency over
// time, the fault windows shaded, the leader and term marked), static so it
// opens anywhere without scripts.
import type { DrillResult, FaultWindow, Sample } from './run.js';
import type { Op } from './workload.js';

const BUCKET_MS = 250;

export function verdictWord(valid: boolean | 'unknown'): string {
  return valid === true ? 'PASS' : valid === false ? 'FAIL' : 'UNKNOWN';
}

export function summary(result: DrillResult): string {
  const lines = [
    `drill ${result.scenario} (seed ${result.options.seed}, ${result.options.clients} clients, ${result.options.rate} ops/s, ${(result.options.durationMs / 1000).toFixed(0)} s): ${verdictWord(result.valid)}`,
    `  writes: ${result.counts.ok} acknowledged, ${result.counts.fail} failed (${result.counts.rolledBack} told RolledBack), ${result.counts.unknown} unknown`,
  ];
  for (const [i, f] of result.faults.entries()) {
    lines.push(`  fault ${i + 1} at ${(f.startMs / 1000).toFixed(1)} s: ${f.description}`);
    lines.push(`    failover ${f.failoverMs === null || f.failoverMs === undefined ? 'none (no successful write after it)' : `${f.failoverMs} ms`}${f.newLeader === null || f.newLeader === undefined ? '' : ` (node ${f.newLeader}, term ${f.newTerm ?? '?'})`}, longest stretch without a write ${f.unavailableMs ?? 0} ms`);
  }
  lines.push(`  PROMOTE on each node: ${result.promoted.map((p) => `node ${p.replica} committed ${p.committed}, rolled back ${p.rolledBack}`).join('; ')}`);
  lines.push(`  converged ${result.convergedMs === null ? 'NOT within the time allowed' : `${result.convergedMs} ms after the clients stopped`}`);
  for (const check of result.checks) lines.push(`  ${verdictWord(check.valid).padEnd(7)} ${check.name}: ${check.summary}`);
  return lines.join('\n');
}

const esc = (text: string): string => text.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c] as string);

interface Frame {
  readonly width: number;
  readonly height: number;
  readonly left: number;
  readonly top: number;
  readonly endMs: number;
}

const PLOT: Frame = { width: 960, height: 260, left: 56, top: 34, endMs: 1 };
const x = (f: Frame, ms: number): number => f.left + (Math.max(0, Math.min(ms, f.endMs)) / f.endMs) * (f.width - f.left - 16);
const innerHeight = (f: Frame): number => f.height - f.top - 28;

function axes(f: Frame, yMax: number, yLabel: string, yFormat: (v: number) => string): string {
  const bottom = f.top + innerHeight(f);
  const parts = [`<line x1="${f.left}" y1="${bottom}" x2="${f.width - 16}" y2="${bottom}" class="axis"/>`, `<line x1="${f.left}" y1="${f.top}" x2="${f.left}" y2="${bottom}" class="axis"/>`];
  const stepS = Math.max(1, Math.ceil(f.endMs / 1000 / 10));
  for (let s = 0; s * 1000 <= f.endMs; s += stepS) parts.push(`<text x="${x(f, s * 1000)}" y="${bottom + 16}" class="tick" text-anchor="middle">${s}s</text>`);
  for (let i = 0; i <= 4; i += 1) {
    const v = (yMax * i) / 4;
    const y = bottom - (innerHeight(f) * i) / 4;
    parts.push(`<line x1="${f.left}" y1="${y}" x2="${f.width - 16}" y2="${y}" class="grid"/><text x="${f.left - 6}" y="${y + 4}" class="tick" text-anchor="end">${yFormat(v)}</text>`);
  }
  parts.push(`<text x="${f.left}" y="${f.top - 8}" class="label">${esc(yLabel)}</text>`);
  return parts.join('');
}

function faultBands(f: Frame, faults: readonly FaultWindow[]): string {
  return faults.map((w) => {
    const end = Math.max(w.endMs, w.startMs + 50);
    return `<rect x="${x(f, w.startMs)}" y="${f.top}" width="${Math.max(2, x(f, end) - x(f, w.startMs))}" height="${innerHeight(f)}" class="fault"><title>${esc(w.description)}</title></rect>`
      + `<text x="${x(f, w.startMs) + 3}" y="${f.top + 12}" class="faultlabel">${esc(w.scenario)}</text>`;
  }).join('');
}

/** The leader over time: a band per stretch with one writable node and term, from the status samples. */
function leaderBand(f: Frame, samples: readonly Sample[]): string {
  const times = [...new Set(samples.map((s) => s.atMs))].sort((a, b) => a - b);
  const stretches: Array<{ from: number; to: number; label: string }> = [];
  for (const t of times) {
    const leader = samples.find((s) => s.atMs === t && s.writable === true);
    const label = leader === undefined ? 'no leader' : `node ${leader.replica} · term ${leader.term ?? '?'}`;
    const last = stretches[stretches.length - 1];
    if (last !== undefined && last.label === label) last.to = t;
    else {
      if (last !== undefined) last.to = t;
      stretches.push({ from: t, to: t, label });
    }
  }
  const y = f.height - 8;
  return stretches.map((s, i) => {
    const cls = s.label === 'no leader' ? 'noleader' : `leader${i % 2}`;
    const width = Math.max(1, x(f, s.to) - x(f, s.from));
    return `<rect x="${x(f, s.from)}" y="${y - 12}" width="${width}" height="14" class="${cls}"><title>${esc(s.label)}</title></rect>`
      + (width > 70 ? `<text x="${x(f, s.from) + 4}" y="${y - 1}" class="bandlabel">${esc(s.label)}</text>` : '');
  }).join('');
}

function throughputChart(result: DrillResult, endMs: number): string {
  const f: Frame = { ...PLOT, height: PLOT.height + 22, endMs };
  const buckets = Math.ceil(endMs / BUCKET_MS);
  const series = (pick: (op: Op) => boolean): number[] => {
    const counts = new Array<number>(buckets).fill(0);
    for (const op of result.ops) {
      if (!pick(op)) continue;
      const at = op.completeMs ?? op.invokeMs;
      const i = Math.min(buckets - 1, Math.floor(at / BUCKET_MS));
      counts[i] = (counts[i] ?? 0) + 1000 / BUCKET_MS;
    }
    return counts;
  };
  const ok = series((o) => o.result === 'ok');
  const fail = series((o) => o.result === 'fail');
  const unknown = series((o) => o.result === 'unknown');
  const yMax = Math.max(10, ...ok, ...fail, ...unknown) * 1.1;
  const bottom = f.top + innerHeight(f);
  const line = (values: number[], cls: string): string => `<polyline class="${cls}" points="${values.map((v, i) => `${x(f, (i + 0.5) * BUCKET_MS).toFixed(1)},${(bottom - (v / yMax) * innerHeight(f)).toFixed(1)}`).join(' ')}"/>`;
  return `<svg viewBox="0 0 ${f.width} ${f.height}" width="${f.width}" height="${f.height}" role="img" aria-label="throughput over time">`
    + faultBands(f, result.faults) + axes(f, yMax, 'operations per second (ok, failed, unknown)', (v) => v.toFixed(0))
    + line(ok, 'ok') + line(fail, 'fail') + line(unknown, 'unknown') + leaderBand(f, result.samples) + '</svg>';
}

function latencyChart(result: DrillResult, endMs: number): string {
  const f: Frame = { ...PLOT, endMs };
  const done = result.ops.filter((o) => o.result === 'ok' && o.completeMs !== null);
  const latencies = done.map((o) => (o.completeMs as number) - o.invokeMs);
  const yMax = Math.max(20, ...latencies) * 1.1;
  const bottom = f.top + innerHeight(f);
  const logY = (ms: number): number => bottom - (Math.log10(1 + ms) / Math.log10(1 + yMax)) * innerHeight(f);
  const dots = done.map((o, i) => `<circle cx="${x(f, o.invokeMs).toFixed(1)}" cy="${logY(latencies[i] as number).toFixed(1)}" r="1.8" class="dot"/>`).join('');
  const parts = [faultBands(f, result.faults), `<line x1="${f.left}" y1="${bottom}" x2="${f.width - 16}" y2="${bottom}" class="axis"/>`, `<line x1="${f.left}" y1="${f.top}" x2="${f.left}" y2="${bottom}" class="axis"/>`];
  for (const ms of [1, 10, 100, 1000, 10000].filter((v) => v <= yMax)) parts.push(`<line x1="${f.left}" y1="${logY(ms)}" x2="${f.width - 16}" y2="${logY(ms)}" class="grid"/><text x="${f.left - 6}" y="${logY(ms) + 4}" class="tick" text-anchor="end">${ms >= 1000 ? `${ms / 1000}s` : `${ms}ms`}</text>`);
  const stepS = Math.max(1, Math.ceil(endMs / 1000 / 10));
  for (let s = 0; s * 1000 <= endMs; s += stepS) parts.push(`<text x="${x(f, s * 1000)}" y="${bottom + 16}" class="tick" text-anchor="middle">${s}s</text>`);
  parts.push(`<text x="${f.left}" y="${f.top - 8}" class="label">latency of acknowledged operations (log scale), by invoke time</text>`);
  return `<svg viewBox="0 0 ${f.width} ${f.height}" width="${f.width}" height="${f.height}" role="img" aria-label="latency over time">${parts.join('')}${dots}</svg>`;
}

export function html(result: DrillResult): string {
  const endMs = Math.max(1_000, ...result.ops.map((o) => o.completeMs ?? o.invokeMs), ...result.samples.map((s) => s.atMs));
  const verdict = verdictWord(result.valid);
  const rows = (cells: ReadonlyArray<readonly string[]>): string => cells.map((c) => `<tr>${c.map((v) => `<td>${esc(v)}</td>`).join('')}</tr>`).join('');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>qsync drill ${esc(result.scenario)}: ${verdict}</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 24px; color: #1d2330; }
h1 { font-size: 20px; } .verdict { padding: 2px 10px; border-radius: 4px; color: white; }
.PASS { background: #1f8a4c; } .FAIL { background: #c0392b; } .UNKNOWN { background: #b9770e; }
table { border-collapse: collapse; margin: 8px 0 18px; } td, th { border-bottom: 1px solid #dde; padding: 4px 10px; text-align: left; vertical-align: top; }
svg { display: block; margin: 6px 0 18px; background: #fbfbfd; border: 1px solid #e3e5ee; }
.axis { stroke: #556; } .grid { stroke: #e6e8f0; } .tick { font-size: 11px; fill: #556; } .label { font-size: 12px; fill: #334; }
.fault { fill: #f5b7b1; opacity: 0.45; } .faultlabel { font-size: 11px; fill: #922b21; }
.ok { fill: none; stroke: #1f8a4c; stroke-width: 1.6; } .fail { fill: none; stroke: #c0392b; stroke-width: 1.2; } .unknown { fill: none; stroke: #b9770e; stroke-width: 1.2; stroke-dasharray: 4 2; }
.dot { fill: #2e4e9e; opacity: 0.55; } .leader0 { fill: #d6e4f5; } .leader1 { fill: #c2d6ee; } .noleader { fill: #f5b7b1; } .bandlabel { font-size: 10px; fill: #223; }
</style></head><body>
<h1>qsync drill <code>${esc(result.scenario)}</code> <span class="verdict ${verdict}" id="verdict">${verdict}</span></h1>
<p>Run ${esc(result.run)}, started ${esc(result.startedAt)}; seed ${result.options.seed}, ${result.options.clients} clients at ${result.options.rate} ops/s for ${(result.options.durationMs / 1000).toFixed(0)} s, ${result.options.repetitions} repetition(s).
Writes: <b>${result.counts.ok}</b> acknowledged, <b>${result.counts.fail}</b> failed (${result.counts.rolledBack} RolledBack), <b>${result.counts.unknown}</b> unknown.</p>
<h2>Throughput</h2>${throughputChart(result, endMs)}
<p>Green: acknowledged; red: failed; dashed: unknown. Shaded: fault windows. The band at the bottom: which node accepted writes, in which term.</p>
<h2>Latency</h2>${latencyChart(result, endMs)}
<h2>Faults</h2><table><tr><th>at</th><th>fault</th><th>failover</th><th>new leader</th><th>longest stretch without a write</th></tr>
${rows(result.faults.map((f) => [`${(f.startMs / 1000).toFixed(1)} s`, f.description, f.failoverMs === null || f.failoverMs === undefined ? 'none' : `${f.failoverMs} ms`, f.newLeader === null || f.newLeader === undefined ? '-' : `node ${f.newLeader} (term ${f.newTerm ?? '?'})`, `${f.unavailableMs ?? 0} ms`]))}</table>
<h2>Checks</h2><table><tr><th>check</th><th>verdict</th><th>detail</th></tr>
${rows(result.checks.map((c) => [c.name, verdictWord(c.valid), c.summary]))}</table>
<h2>PROMOTE</h2><table><tr><th>node</th><th>prepared transactions committed</th><th>rolled back</th></tr>
${rows(result.promoted.map((p) => [`node ${p.replica}`, String(p.committed), String(p.rolledBack)]))}</table>
</body></html>
`;
}
