import { readFileSync } from 'node:fs';
import { startLocalCluster } from './src/cli/cluster.js';
import { connect } from './src/client/index.js';
const cluster = await startLocalCluster({ dir: '/tmp/qsync-dbg-cluster', tables: [{ ddl: 'CREATE TABLE IF NOT EXISTS notes (id text PRIMARY KEY, body text)', name: 'notes', mode: 'async' }] });
try {
  const one = await connect(cluster.nodes[0]!.clientAddress); const two = await connect(cluster.nodes[1]!.clientAddress);
  await Promise.all([one.execute(["INSERT INTO notes VALUES ('a', 'from 1'), ('shared', 'from 1')"]), two.execute(["INSERT INTO notes VALUES ('b', 'from 2'), ('shared', 'from 2') ON CONFLICT (id) DO UPDATE SET body = excluded.body"])]);
  await new Promise((r) => setTimeout(r, 2000));
  for (const n of cluster.nodes) { const c = await n.sql(); console.log(n.replica, JSON.stringify((await c.query('select * from notes order by id')).rows)); await c.end(); }
  one.close(); two.close();
} finally { await cluster.stop(); }
for (const i of [1, 2, 3]) console.log(readFileSync(`/tmp/qsync-dbg-cluster/node${i}/sidecar.log`, 'utf8').split('\n').filter((l) => /"level":(40|50|60)/.test(l)).slice(0, 5).join('\n'));
