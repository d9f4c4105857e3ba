// Tries to lose an acknowledged record: a child process appends from many
// concurrent workers and is SIGKILLed mid-stream, again and again on the same
// directory. Every record it acknowledged must be recovered, per-replica lsns
// must stay contiguous, and the journal must keep accepting appends.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { describe, expect, it, onTestFinished } from 'vitest';
import { Journal } from '../../src/journal/index.js';
import { key, readAll, tempDir } from '../support/journal.js';

const child = fileURLToPath(new URL('./crash-child.ts', import.meta.url));

/** Run the child until it has acknowledged `acks` records, SIGKILL it, and return what it acknowledged. */
async function runAndKill(dir: string, acks: number): Promise<{ acked: Set<string>; startRecords: number }> {
  const proc = spawn(process.execPath, ['--import', 'tsx', child, dir, '4096'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const acked = new Set<string>();
  let startRecords = -1;
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  for await (const line of createInterface({ input: proc.stdout })) {
    const [word, a, b] = line.split(' ');
    if (word === 'ready') startRecords = Number(a);
    if (word === 'ack') acked.add(`${a}:${b}`);
    if (acked.size >= acks && proc.exitCode === null) proc.kill('SIGKILL');
  }
  await exited;
  expect(proc.signalCode).toBe('SIGKILL');
  return { acked, startRecords };
}

describe('journal crash recovery (real process, SIGKILL)', () => {
  it('never loses an acknowledged record across repeated kills', async () => {
    const { dir, cleanup } = await tempDir();
    onTestFinished(cleanup);
    let total = 0;
    let segments = 0;
    for (const acks of [1, 50, 400, 2000, 5000]) {
      const { acked, startRecords } = await runAndKill(dir, acks);
      expect(startRecords).toBe(total); // the child recovered everything the parent saw
      const journal = await Journal.open({ dir });
      const records = await readAll(journal);
      const present = new Set(records.map(key));
      const lost = [...acked].filter((k) => !present.has(k));
      expect(lost).toEqual([]);
      const last = new Map<number, number>();
      for (const record of records) {
        expect(record.lsn).toBe((last.get(record.replica) ?? 0) + 1);
        last.set(record.replica, record.lsn);
      }
      total = records.length;
      segments = journal.recovery.segments;
      await journal.close();
    }
    expect(total).toBeGreaterThanOrEqual(7451);
    expect(segments).toBeGreaterThan(10); // the kills also landed across segment rotations
  });
});
