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
import { REPLICA_LOCAL } from '../core/types.js';
import { vclockCovers, vclockEntries, vclockGet, type VClock } from '../core/vclock.js';

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
    let records = 0;
    for (const [replica, lsn] of vclockEntries(tail)) {
      if (replica !== REPLICA_LOCAL) records += Math.max(0, lsn - vclockGet(peer, replica));
    }
    if (records === 0) return { records, ms: 0 };
    // Samples are in time order and their vclocks only grow: the first one not covered is the oldest.
    const oldest = this.#samples.find((s) => !vclockCovers(peer, s.vclock));
    return { records, ms: oldest === undefined ? 0 : Math.max(0, nowMs - oldest.atMs) };
  }
}
