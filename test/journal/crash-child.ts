// Child process for crash.test.ts: appends forever from 16 concurrent
// workers over 3 replicas and prints `ack <replica> <lsn>` once each record
// is durable. The parent SIGKILLs it at a moment of its choosing.
import { Journal } from '../../src/journal/index.js';
import { nextTxn } from '../support/journal.js';

const [dir, segmentBytes] = process.argv.slice(2);
if (dir === undefined) throw new Error('usage: crash-child <dir> [segmentBytesMax]');
const journal = await Journal.open({ dir, segmentBytesMax: Number(segmentBytes ?? 65_536) });
process.stdout.write(`ready ${journal.recovery.records}\n`);

async function worker(id: number): Promise<never> {
  for (let i = 0; ; i += 1) {
    const record = nextTxn(journal, 1 + ((id + i) % 3), 40 + ((id * 13 + i) % 200));
    await journal.append(record);
    // Pipes are written synchronously on Linux: once this returns, the parent can read it.
    process.stdout.write(`ack ${record.replica} ${record.lsn}\n`);
  }
}
await Promise.all(Array.from({ length: 16 }, (_, id) => worker(id)));
