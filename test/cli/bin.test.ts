// bin/qsync.js runs the build in dist/ only while it is whole and newer than
// every source file, else the sources through tsx: a stale or half-written
// build never runs. Tried on a copy of the command with stand-in entry points.
import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, expect, it } from 'vitest';

const run = promisify(execFile);
const root = mkdtempSync(join(tmpdir(), 'qsync-bin-'));
mkdirSync(join(root, 'bin'));
mkdirSync(join(root, 'src', 'cli'), { recursive: true });
mkdirSync(join(root, 'dist', 'cli'), { recursive: true });
copyFileSync('bin/qsync.js', join(root, 'bin', 'qsync.js'));
symlinkSync(join(process.cwd(), 'node_modules'), join(root, 'node_modules'));
writeFileSync(join(root, 'package.json'), '{"type": "module"}');
writeFileSync(join(root, 'src', 'cli', 'main.ts'), "const from: string = 'sources'; console.log(from);\n");
writeFileSync(join(root, 'dist', 'cli', 'main.js'), "console.log('dist');\n");
afterAll(() => rmSync(root, { recursive: true, force: true }));

const which = async (): Promise<string> => (await run(process.execPath, [join(root, 'bin', 'qsync.js')])).stdout.trim();
const at = (path: string, seconds: number): void => utimesSync(path, seconds, seconds);

it('runs the sources while there is no whole build', async () => {
  expect(await which()).toBe('sources');
});

it('runs dist/ once the build is newer than every source file', async () => {
  at(join(root, 'src', 'cli', 'main.ts'), 1_000);
  writeFileSync(join(root, 'dist', '.built'), '');
  at(join(root, 'dist', '.built'), 2_000);
  expect(await which()).toBe('dist');
});

it('runs the sources again once one of them is edited after the build', async () => {
  mkdirSync(join(root, 'src', 'core'), { recursive: true });
  writeFileSync(join(root, 'src', 'core', 'edited.ts'), 'export {};\n');
  at(join(root, 'src', 'core', 'edited.ts'), 3_000);
  expect(await which()).toBe('sources');
});
