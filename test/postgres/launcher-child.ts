// Child for launcher.test.ts: launch, query, crash, restart and destroy a
// server as whatever OS user this process runs as; print what it saw.
import pg from 'pg';
import { launchPostgres } from '../../src/postgres/index.js';

const server = await launchPostgres();
const client = new pg.Client({ connectionString: server.connectionString });
await client.connect();
const { rows } = await client.query<{ max_prepared_transactions: string }>('SHOW max_prepared_transactions');
await client.end();
await server.kill();
await server.start();
const restarted = (await server.pid()) !== null;
await server.destroy();
process.stdout.write(`${JSON.stringify({ uid: process.getuid?.(), prepared: rows[0]?.max_prepared_transactions, restarted })}\n`);
