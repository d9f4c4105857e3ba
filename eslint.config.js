// Lint for qsync. The block for src/core is the one that matters most: the
// core is pure so that the simulator can replay any run from its seed
// (STYLE.md, DESIGN.md "Deterministic core"), and this rule keeps it so.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const nodeBuiltins = [
  'assert', 'async_hooks', 'buffer', 'child_process', 'cluster', 'crypto', 'dgram', 'dns',
  'events', 'fs', 'fs/promises', 'http', 'http2', 'https', 'inspector', 'module', 'net', 'os',
  'path', 'perf_hooks', 'process', 'readline', 'stream', 'timers', 'timers/promises', 'tls',
  'tty', 'url', 'util', 'v8', 'vm', 'worker_threads', 'zlib',
];

const coreBan = (what) => `src/core is deterministic: ${what} must come in as an input from the shell (src/sidecar).`;

export default tseslint.config(
  { ignores: ['node_modules/', 'dist/', 'coverage/', 'bench/results/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { process: 'readonly', console: 'readonly', Buffer: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setInterval: 'readonly', clearInterval: 'readonly', setImmediate: 'readonly', performance: 'readonly', URL: 'readonly' } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-restricted-syntax': ['error', { selector: 'CallExpression[callee.property.name=/^(only|skip|todo|skipIf)$/][callee.object.name=/^(it|test|describe)$/]', message: 'A test that does not run proves nothing.' }],
      eqeqeq: ['error', 'always'],
    },
  },
  {
    files: ['src/core/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        paths: nodeBuiltins.map((name) => ({ name, message: coreBan('Node I/O') })),
        patterns: [{ group: ['node:*'], message: coreBan('Node I/O') }],
      }],
      'no-restricted-globals': ['error',
        ...['setTimeout', 'setInterval', 'setImmediate', 'clearTimeout', 'clearInterval', 'queueMicrotask'].map((name) => ({ name, message: coreBan('a timer') })),
        ...['performance', 'process', 'fetch', 'crypto'].map((name) => ({ name, message: coreBan(name) })),
      ],
      'no-restricted-syntax': ['error',
        { selector: "MemberExpression[object.name='Date'][property.name='now']", message: coreBan('the clock') },
        { selector: "NewExpression[callee.name='Date']", message: coreBan('the clock') },
        { selector: "MemberExpression[object.name='Math'][property.name='random']", message: coreBan('randomness') },
        { selector: 'AwaitExpression', message: 'src/core does not await: it returns what to do and the runtime loop awaits.' },
        { selector: ':function[async=true]', message: 'src/core does not await: it returns what to do and the runtime loop awaits.' },
      ],
    },
  },
);
