// Failover benchmark: on a local 3-node cluster, SIGKILL the leader's sidecar
// and measure the time from the kill to the first successful sync write on
// the new leader (through the client library, which looks for the leader on
// its own). Repeated `rounds` times per election timeout; the killed node is
// restarted and caught up between rounds. Prints p50 and max.
import { performance } from 'node:perf_hooks';
import { startLocalCluster } from '../src/cli/cluster.js';
import { connect } from '../src/client/index.js';

export interface FailoverBenchOptions {
  readonly rounds: number;
  readonly electionTimeoutsMs: readonly number[];
}

export interface FailoverBenchRow {
  readonly electionTimeoutMs: number;
  readonly rounds: number;
  readonly p50Ms: number;
  readonly maxMs: number;
  readonly samplesMs: readonly number[];
}

export async function runFailoverBench(options: FailoverBenchOptions): Promise<FailoverBenchRow[]> {
  const rows: FailoverBenchRow[] = [];
  console.log(`failover: SIGKILL the leader, time to the first successful sync write on the new leader, ${options.rounds} rounds`);
  console.log('election timeout ms   p50 ms   max ms   samples');
  for (const electionTimeoutMs of options.electionTimeoutsMs) {
    const cluster = await startLocalCluster({
      electionTimeoutMs,
      tables: [{ ddl: 'CREATE TABLE bench_failover (id bigint PRIMARY KEY, round int)', name: 'bench_failover', mode: 'sync' }],
    });
    const db = await connect(cluster.clientAddresses, { ...cluster.credentials, leaderWaitMs: 60_000 });
    const samplesMs: number[] = [];
    let id = 0;
    try {
      for (let round = 0; round < options.rounds; round += 1) {
        const leader = await cluster.leader(30_000);
        await db.execute([['INSERT INTO bench_failover VALUES ($1, $2)', [++id, round]]]); // the client is on the leader now
        const fault = performance.now();
        await leader.killSidecar();
        for (;;) {
          try {
            await db.execute([['INSERT INTO bench_failover VALUES ($1, $2)', [++id, round]]]);
            break;
          } catch {
            // OutcomeUnknown for a write caught by the kill; the next one goes to the new leader
          }
        }
        samplesMs.push(performance.now() - fault);
        if (db.address === leader.clientAddress) throw new Error('the write after the kill landed on the killed node');
        await leader.startSidecar();
        const next = await cluster.leader(30_000);
        const target = (await next.status()).vclock;
        for (let caughtUp = false; !caughtUp;) {
          const vclock = (await leader.status()).vclock;
          caughtUp = target.every((lsn, i) => i === 0 || (vclock[i] ?? 0) >= lsn);
          if (!caughtUp) await new Promise((r) => setTimeout(r, 50));
        }
      }
    } finally {
      db.close();
      await cluster.stop();
    }
    const sorted = [...samplesMs].sort((a, b) => a - b);
    const row = {
      electionTimeoutMs, rounds: samplesMs.length,
      p50Ms: Math.round(sorted[Math.floor((sorted.length - 1) / 2)] ?? 0), maxMs: Math.round(sorted.at(-1) ?? 0),
      samplesMs: samplesMs.map((s) => Math.round(s)),
    };
    rows.push(row);
    console.log(`${String(electionTimeoutMs).padStart(19)} ${String(row.p50Ms).padStart(8)} ${String(row.maxMs).padStart(8)}   ${row.samplesMs.join(' ')}`);
  }
  return rows;
}
