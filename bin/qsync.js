#!/usr/bin/env node
// The qsync command. Runs the compiled JavaScript in dist/ when a build is
// there and newer than every source file (`npm run build`, which `npm start`,
// `npm test` and `npm run bench` run first), else the TypeScript sources
// through tsx, so a checkout needs nothing but `npm install`. Compiled, a
// sidecar starts in about half the time and holds about 25 MB less: tsx
// keeps a loader thread with a heap of its own (docs/rfc/0018).
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));

/** Newest modification time of the .ts files under `dir`, in ms. */
function newestSource(dir) {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestSource(path));
    else if (entry.name.endsWith('.ts')) newest = Math.max(newest, statSync(path).mtimeMs);
  }
  return newest;
}

/** The build's marker, written once tsc has finished: its time, or 0 when there is no whole build. */
function builtAt() {
  try {
    return statSync(join(root, 'dist', '.built')).mtimeMs;
  } catch {
    return 0;
  }
}

const built = builtAt();
if (built > 0 && built >= newestSource(join(root, 'src'))) {
  await import('../dist/cli/main.js');
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../src/cli/main.ts');
}
