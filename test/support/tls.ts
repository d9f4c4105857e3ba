// A cluster CA and node certificates for the peer TLS tests, made with the
// openssl command (Debian's, on every machine here): what an operator would
// run to set up peer TLS (the README shows the same commands).
import { execFile } from 'node:child_process';
import { chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { PeerTlsFiles } from '../../src/net/tls.js';

const run = promisify(execFile);

/** A CA in `dir` named `name`, and a certificate it signed for each of `nodes`. */
export async function clusterCa(dir: string, name: string, nodes: readonly string[]): Promise<Record<string, PeerTlsFiles>> {
  const ca = { cert: join(dir, `${name}-ca.crt`), key: join(dir, `${name}-ca.key`) };
  await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', ca.key, '-out', ca.cert, '-days', '2', '-subj', `/CN=${name} cluster CA`]);
  const files: Record<string, PeerTlsFiles> = {};
  for (const node of nodes) {
    const base = join(dir, `${name}-${node}`);
    await run('openssl', ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${base}.key`, '-out', `${base}.csr`, '-subj', `/CN=${node}`]);
    await run('openssl', ['x509', '-req', '-in', `${base}.csr`, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-out', `${base}.crt`, '-days', '2']);
    await chmod(`${base}.key`, 0o600);
    files[node] = { cert: `${base}.crt`, key: `${base}.key`, ca: ca.cert };
  }
  return files;
}
