// Small durable-filesystem helpers shared by the journal's parts.
import { open } from 'node:fs/promises';

/** Make a created, renamed or removed directory entry durable (Linux needs the directory fsynced). */
export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
