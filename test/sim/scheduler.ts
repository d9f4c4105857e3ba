// Simulated time and randomness. One seeded generator draws everything; one
// queue of timed events is run in (time, insertion) order, and after each
// event every promise chain it started runs to its next wait, so a run is a
// pure function of its seed.

export { Rng } from '../../src/core/rng.js';

/** One life of a node: events scheduled for it are dropped once it has crashed. */
export interface Life {
  alive: boolean;
}

interface Scheduled {
  readonly at: number;
  readonly seq: number;
  readonly run: () => void;
  readonly life: Life | null;
}

/** Lets every promise chain that is ready run: microtasks drain before setImmediate fires. */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export class Scheduler {
  now = 0;
  events = 0;
  #seq = 0;
  readonly #heap: Scheduled[] = [];

  /** Run `run` at `at` (never before now), unless `life` has ended by then. */
  at(at: number, run: () => void, life: Life | null = null): void {
    this.#push({ at: Math.max(at, this.now), seq: this.#seq++, run, life });
  }

  after(ms: number, run: () => void, life: Life | null = null): void {
    this.at(this.now + ms, run, life);
  }

  /** Run events up to `until`; `check` runs after each one (the invariants), and false stops the run. */
  async run(until: number, check: () => boolean): Promise<void> {
    await settle();
    for (let next = this.#heap[0]; next !== undefined && next.at <= until; next = this.#heap[0]) {
      this.#pop();
      if (next.life !== null && !next.life.alive) continue;
      this.now = next.at;
      this.events += 1;
      next.run();
      await settle();
      if (!check()) return;
    }
    this.now = Math.max(this.now, until);
  }

  #push(item: Scheduled): void {
    const heap = this.#heap;
    heap.push(item);
    for (let i = heap.length - 1; i > 0;) {
      const parent = (i - 1) >> 1;
      if (!before(heap[i] as Scheduled, heap[parent] as Scheduled)) break;
      [heap[i], heap[parent]] = [heap[parent] as Scheduled, heap[i] as Scheduled];
      i = parent;
    }
  }

  #pop(): void {
    const heap = this.#heap;
    const last = heap.pop() as Scheduled;
    if (heap.length === 0) return;
    heap[0] = last;
    for (let i = 0; ;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < heap.length && before(heap[l] as Scheduled, heap[m] as Scheduled)) m = l;
      if (r < heap.length && before(heap[r] as Scheduled, heap[m] as Scheduled)) m = r;
      if (m === i) break;
      [heap[i], heap[m]] = [heap[m] as Scheduled, heap[i] as Scheduled];
      i = m;
    }
  }
}

function before(a: Scheduled, b: Scheduled): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}
