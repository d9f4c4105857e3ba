import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Real files, real fsync and child processes: give slow disks room, but
    // never assert on time inside a test.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    allowOnly: false,
    passWithNoTests: false,
    reporters: ['default', './test/support/summary-reporter.ts'],
  },
});
