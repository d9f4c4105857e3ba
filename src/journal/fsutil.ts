// Small durable-filesystem helpers shared by the journal's parts.
import { open, type FileHandle } from 'node:fs/promises';

/** Make a created, renamed or removed directory entry durable (Linux needs the directory fsynced). */
export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Write all of `bytes` at `position` (a write may take only part of them). */
export async function writeAll(handle: FileHandle, bytes: Buffer, position: number): Promise<void> {
  let written = 0;
  while (written < bytes.length) {
    const { bytesWritten } = await handle.write(bytes, written, bytes.length - written, position + written);
    written += bytesWritten;
  }
}

/** Create (`wx`: only a new file) or replace (`w`) a file with `bytes`, fsynced before it returns. */
export async function writeDurable(path: string, bytes: Buffer, flag: 'w' | 'wx' = 'w'): Promise<void> {
  const handle = await open(path, flag);
  try {
    await writeAll(handle, bytes, 0);
    await handle.sync();
  } finally {
    await handle.close();
  }
}
