// File helpers shared by the shells.
import { statSync } from 'node:fs';

/** Why a file holding a secret (a secret, a token, a private key) is not private enough, or null when only its owner may read it. */
export function notPrivate(file: string): string | null {
  const mode = statSync(file).mode;
  return (mode & 0o077) === 0 ? null : `${file} may be read by others (mode ${(mode & 0o777).toString(8)}); chmod 600 ${file}`;
}
