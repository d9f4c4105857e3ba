// Ends every test run with one plain line, `tests: N passed, N failed[, N skipped]`,
// that CI and humans can read without knowing vitest's output format. A run
// in which no test executed is an error here: it proves nothing.
import type { Reporter, TestModule } from 'vitest/node';

export default class SummaryReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    const counts = { passed: 0, failed: 0, skipped: 0, pending: 0 };
    for (const module of testModules) {
      for (const test of module.children.allTests()) counts[test.result().state] += 1;
      if (module.state() === 'failed' && [...module.children.allTests()].length === 0) counts.failed += 1;
    }
    const skipped = counts.skipped + counts.pending;
    console.log(`\ntests: ${counts.passed} passed, ${counts.failed} failed${skipped > 0 ? `, ${skipped} skipped` : ''}`);
    if (counts.passed + counts.failed === 0) {
      console.error('no test ran');
      process.exitCode = 1;
    }
  }
}
