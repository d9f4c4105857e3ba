// host:port addresses as qsync writes them (peers, clients, admin): the port
// after the last colon, an IPv6 host in brackets.

export function splitAddress(address: string): { readonly host: string; readonly port: number } {
  const at = address.lastIndexOf(':');
  return { host: address.slice(0, at).replace(/^\[(.*)\]$/, '$1'), port: Number(address.slice(at + 1)) };
}
