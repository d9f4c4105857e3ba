// Assertions that stay on in production (TigerBeetle style). A failed
// assertion is a bug in qsync, not an operating error: never catch it.

export class AssertionFailed extends Error {
  constructor(message: string) {
    super(`assertion failed: ${message}`);
    this.name = 'AssertionFailed';
  }
}

export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new AssertionFailed(message);
}
