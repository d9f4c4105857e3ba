// TLS for peer links, mutual, under one cluster CA (as etcd's peer TLS): each
// node presents its certificate both as a relay (server) and as a subscriber
// (client), and accepts only certificates the cluster CA signed. TLS gives
// confidentiality and keeps strangers out before a byte of qsync's protocol
// is read; the HMAC handshake over the cluster secret still runs inside it and
// is what proves which replica a peer is, so peers are addressed by IP and no
// certificate needs to name one (host names are not checked).
import { readFileSync } from 'node:fs';
import type { ConnectionOptions, SecureContextOptions, TlsOptions } from 'node:tls';
import { QsyncError } from '../core/errors.js';
import { limits } from '../core/limits.js';
import { notPrivate } from '../os/files.js';

export interface PeerTlsFiles {
  /** PEM: this node's certificate (and chain), signed by the cluster CA. */
  readonly cert: string;
  /** PEM: its private key, readable by its owner only. */
  readonly key: string;
  /** PEM: the cluster CA's certificate. */
  readonly ca: string;
}

export interface PeerTls {
  readonly server: TlsOptions;
  readonly client: ConnectionOptions;
}

/** The TLS settings for the peer port and links, read from the files; a clear CONFIG error naming the file otherwise. */
/**
 * The SQL port's TLS (front/server.ts): a server certificate and its key, as
 * PostgreSQL's ssl_cert_file and ssl_key_file; clients check it as their
 * sslmode says. TLS 1.2 or newer, as libpq's default ssl_min_protocol_version.
 */
export function loadSqlTls(files: { readonly cert: string; readonly key: string }): SecureContextOptions {
  const read = (what: string, file: string, privateKey = false): Buffer => {
    try {
      if (privateKey && notPrivate(file) !== null) throw new Error(`it may be read by others; chmod 600 ${file}`);
      return readFileSync(file);
    } catch (error) {
      throw new QsyncError('CONFIG', `SQL port TLS: cannot use the ${what} ${file}: ${(error as Error).message}`, { file });
    }
  };
  return { cert: read('certificate', files.cert), key: read('private key', files.key, true), minVersion: 'TLSv1.2' };
}

export function loadPeerTls(files: PeerTlsFiles): PeerTls {
  const read = (what: string, file: string, privateKey = false): Buffer => {
    try {
      if (privateKey && notPrivate(file) !== null) throw new Error(`it may be read by others; chmod 600 ${file}`);
      return readFileSync(file);
    } catch (error) {
      throw new QsyncError('CONFIG', `peer TLS: cannot use the ${what} ${file}: ${(error as Error).message}`, { file });
    }
  };
  const cert = read('certificate', files.cert);
  const key = read('private key', files.key, true);
  const ca = read('CA certificate', files.ca);
  const common = { cert, key, ca, minVersion: 'TLSv1.3' as const };
  return {
    server: { ...common, requestCert: true, rejectUnauthorized: true, handshakeTimeout: limits.handshakeTimeoutMs },
    // The chain is checked against the cluster CA; which replica answers is proven by the HMAC handshake.
    client: { ...common, rejectUnauthorized: true, checkServerIdentity: () => undefined },
  };
}
