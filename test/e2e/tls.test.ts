// A cluster whose peer links run mutual TLS under a cluster CA (real sidecar
// processes started with --peer-tls-cert/key/ca): it elects a leader and an
// acknowledged sync write is on every node, as without TLS.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startLocalCluster, type LocalCluster } from '../../src/cli/cluster.js';
import { connect } from '../../src/client/index.js';
import { eventually, rowsOn } from '../support/cluster.js';
import { tempDir } from '../support/journal.js';
import { clusterCa } from '../support/tls.js';

let cluster: LocalCluster;
let cleanup: () => Promise<void>;

beforeAll(async () => {
  const temp = await tempDir();
  cleanup = temp.cleanup;
  const certs = await clusterCa(temp.dir, 'local', ['node1', 'node2', 'node3']);
  cluster = await startLocalCluster({
    tables: [{ ddl: 'CREATE TABLE secured (id bigint PRIMARY KEY, note text)', name: 'secured', mode: 'sync' }],
    sidecarArgs: (replica) => {
      const files = certs[`node${replica}`];
      if (files === undefined) throw new Error(`no certificate for node ${replica}`);
      return ['--peer-tls-cert', files.cert, '--peer-tls-key', files.key, '--peer-tls-ca', files.ca];
    },
  });
}, 120_000);

afterAll(async () => {
  await cluster?.stop();
  await cleanup?.();
});

it('replicates a sync write to every node over TLS peer links', async () => {
  const db = await connect(cluster.clientAddresses, cluster.credentials);
  try {
    await db.execute([["INSERT INTO secured VALUES (1, 'over TLS')", []]]);
  } finally {
    db.close();
  }
  for (const node of cluster.nodes) {
    await eventually(async () => expect(await rowsOn(node, 'SELECT note FROM secured')).toEqual([{ note: 'over TLS' }]), `node ${node.replica}`);
  }
  const statuses = await Promise.all(cluster.nodes.map((n) => n.status()));
  for (const s of statuses) expect(s.peers.every((p) => p.connected)).toBe(true);
});
