#!/usr/bin/env node
// The qsync command. Runs the TypeScript sources through tsx, so a checkout
// needs nothing but `npm install`; `npm run build` produces plain JS in dist/.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
