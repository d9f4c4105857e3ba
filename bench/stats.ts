// Shared measuring helpers for the benchmarks: an HDR latency histogram in
// microseconds, and a closed-loop driver of N concurrent callers.
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
