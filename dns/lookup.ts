// Address lookup for the plane's UDP sockets (listener and forwarder): its own module so that the forwarder does not
// import the listener (which imports the resolver, which imports the forwarder: a cycle).

import dns from 'node:dns'

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string, family: number) => void

/**
 * dgram `lookup`: an IP literal of the socket's family is itself, at once; anything else through dns.lookup. The
 * check is cheap on purpose (it runs per reply): an IPv4 literal starts and ends with a digit (a host name's last
 * label cannot be all digits), an IPv6 literal holds a ':'.
 */
export function literalLookup(address: string, family: unknown, callback: LookupCallback): void {
  const fam = family === 6 || family === 'IPv6' ? 6 : 4
  const first = address.charCodeAt(0)
  const last = address.charCodeAt(address.length - 1)
  const literal = fam === 6 ? address.includes(':') : first >= 48 && first <= 57 && last >= 48 && last <= 57
  if (literal) callback(null, address, fam)
  else dns.lookup(address, fam, callback)
}
