// How far behind a peer is, in records and in seconds.
//
// Records: what this journal's tail holds that the peer's acknowledged vclock
// does not (local RAFT records are never relayed and do not count; vclockCovers
// leaves them out too).
//
// Seconds: the age of the oldest record the peer lacks, approximated from
// samples of the tail taken at most every SAMPLE_EVERY_MS: the first sample
// the peer's vclock does not cover was taken at most that long after the
// oldest missing record arrived. A peer behind for longer than the window
// reports the window's age, a lower bound.
import { vclockCovers, vclockMissing, type VClock } from '../core/vclock.js';

const SAMPLE_EVERY_MS = 100;
/** Ten minutes of samples at most. */
const SAMPLES_MAX = 6_000;

export class LagSampler {
  readonly #samples: Array<{ readonly atMs: number; readonly vclock: VClock }> = [];

  /** Record the tail as of `nowMs` (a no-op if the last sample is recent or the tail has not moved). */
  note(tail: VClock, nowMs: number): void {
    const last = this.#samples[this.#samples.length - 1];
    if (last !== undefined && (nowMs - last.atMs < SAMPLE_EVERY_MS || vclockCovers(last.vclock, tail))) return;
    this.#samples.push({ atMs: nowMs, vclock: tail });
    if (this.#samples.length > SAMPLES_MAX) this.#samples.splice(0, this.#samples.length - SAMPLES_MAX);
  }

  /** The peer's lag behind `tail`: records it lacks, and milliseconds since the oldest of them arrived here. */
  lag(peer: VClock, tail: VClock, nowMs: number): { readonly records: number; readonly ms: number } {
    const records = vclockMissing(peer, tail);
    if (records === 0) return { records, ms: 0 };
    // Samples are in time order and their vclocks only grow, so the covered ones are a prefix:
    // binary search for the first one the peer does not cover, the oldest record it lacks.
    let low = 0;
    let high = this.#samples.length;
    while (low < high) {
      const mid = (low + high) >>> 1;
      if (vclockCovers(peer, (this.#samples[mid] as { vclock: VClock }).vclock)) low = mid + 1;
      else high = mid;
    }
    const oldest = this.#samples[low];
    return { records, ms: oldest === undefined ? 0 : Math.max(0, nowMs - oldest.atMs) };
  }
}
