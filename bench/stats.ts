// Shared measuring helpers for the benchmarks: an HDR latency histogram in
// microseconds, and a closed-loop driver of N concurrent callers.
import { readdirSync, readFileSync } from 'node:fs';
import * as hdr from 'hdr-histogram-js';

export interface Latency {
  record(startMs: number): void;
  p50Ms(): number;
  p99Ms(): number;
}

export function latency(): Latency {
  const histogram = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: 3 });
  return {
    record: (startMs) => histogram.recordValue(Math.max(1, Math.round((performance.now() - startMs) * 1000))),
    p50Ms: () => histogram.getValueAtPercentile(50) / 1000,
    p99Ms: () => histogram.getValueAtPercentile(99) / 1000,
  };
}

/** Run `callers` loops of `op` until `seconds` pass; returns operations done, elapsed seconds and latencies. */
export async function closedLoop(callers: number, seconds: number, op: (caller: number, i: number) => Promise<void>): Promise<{ ops: number; seconds: number; latency: Latency }> {
  const lat = latency();
  const started = performance.now();
  const deadline = started + seconds * 1000;
  let ops = 0;
  await Promise.all(Array.from({ length: callers }, async (_, caller) => {
    for (let i = 0; performance.now() < deadline; i += 1) {
      const start = performance.now();
      await op(caller, i);
      lat.record(start);
      ops += 1;
    }
  }));
  return { ops, seconds: (performance.now() - started) / 1000, latency: lat };
}

/**
 * CPU seconds (user + system) a process and its children that ended have
 * used so far, 0 once it is gone (Linux /proc). A PostgreSQL backend that
 * exits during a run moves its CPU into the postmaster's children's times:
 * without them a tree's total could fall (a negative figure per commit).
 */
export function cpuSeconds(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ');
    // utime, stime, cutime, cstime in clock ticks (CLK_TCK 100)
    return (Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14])) / 100;
  } catch {
    return 0;
  }
}

/**
 * Context switches a process's threads made so far, voluntary and not, 0 once
 * it is gone (Linux /proc). Each is a wake-up or a preemption: how often a
 * commit wakes each process, which batching lowers and CPU per commit follows.
 */
export function contextSwitches(pid: number): number {
  let total = 0;
  try {
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      const status = readFileSync(`/proc/${pid}/task/${task}/status`, 'utf8');
      total += Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? 0) + Number(/^nonvoluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? 0);
    }
  } catch {
    // gone meanwhile
  }
  return total;
}

/** A process and every process it started (a postmaster's backends), by their parent pids in /proc. */
export function tree(root: number): number[] {
  const parents = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const ppid = Number(readFileSync(`/proc/${entry}/stat`, 'utf8').replace(/^.*\) /, '').split(' ')[1]);
      parents.set(ppid, [...(parents.get(ppid) ?? []), Number(entry)]);
    } catch {
      // gone meanwhile
    }
  }
  const all: number[] = [];
  for (let queue = [root]; queue.length > 0;) {
    const pid = queue.pop() as number;
    all.push(pid);
    queue = [...queue, ...(parents.get(pid) ?? [])];
  }
  return all;
}
