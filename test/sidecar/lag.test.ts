// The lag in seconds is the age of the oldest tail sample a peer does not
// cover; the sampler finds it by binary search, which must agree with a scan.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Lsn, ReplicaId } from '../../src/core/types.js';
import { vclockCovers, vclockFollow, vclockFromEntries, type VClock } from '../../src/core/vclock.js';
import { LagSampler } from '../../src/sidecar/lag.js';

describe('LagSampler', () => {
  it('reports records and the age of the oldest record the peer lacks', () => {
    const lag = new LagSampler();
    const at = (n: number): VClock => vclockFromEntries([[1 as ReplicaId, n as Lsn]]);
    lag.note(at(1), 0);
    lag.note(at(2), 100);
    lag.note(at(3), 150); // within 100 ms of the last sample: not taken
    lag.note(at(4), 300);
    expect(lag.lag(at(4), at(4), 1_000)).toEqual({ records: 0, ms: 0 });
    expect(lag.lag(at(1), at(4), 1_000)).toEqual({ records: 3, ms: 900 }); // lacks lsn 2, sampled at 100
    expect(lag.lag(at(2), at(4), 1_000)).toEqual({ records: 2, ms: 700 }); // lacks 3 and 4; first uncovered sample at 300
  });

  it('finds the same oldest sample as a scan would, for any growing tail and any peer', () => {
    fc.assert(fc.property(fc.array(fc.tuple(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 5 })), { minLength: 1, maxLength: 60 }), fc.nat(400), (steps, peerAt) => {
      const lag = new LagSampler();
      const samples: Array<{ atMs: number; vclock: VClock }> = [];
      let tail: VClock = [];
      steps.forEach(([replica, grow], i) => {
        tail = vclockFollow(tail, replica as ReplicaId, ((tail[replica] ?? 0) + grow) as Lsn);
        const atMs = i * 100;
        lag.note(tail, atMs);
        samples.push({ atMs, vclock: tail });
      });
      // A peer that holds some earlier tail (or nothing).
      const peer = samples[Math.min(samples.length - 1, Math.floor(peerAt / 10))]?.vclock ?? [];
      const now = steps.length * 100;
      const oldest = samples.find((s) => !vclockCovers(peer, s.vclock));
      expect(lag.lag(peer, tail, now).ms).toBe(oldest === undefined ? 0 : now - oldest.atMs);
    }));
  });
});
