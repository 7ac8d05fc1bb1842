// Address arithmetic shared by validation, allocation and the planes: parsing, CIDR membership, numeric form.
// ipaddr.js does the parsing; addresses are handled as BigInt so IPv4 and IPv6 share one code path.

import ipaddr from 'ipaddr.js'
import { isIP } from 'node:net'

export type Family = 4 | 6

export interface Cidr {
  readonly family: Family
  /** Network address as a number. */
  readonly base: bigint
  readonly prefix: number
  /** Number of addresses in the block. */
  readonly size: bigint
  readonly text: string
}

export function ipFamily(ip: string): Family | 0 {
  return isIP(ip) as Family | 0
}

export function ipToBigInt(ip: string): bigint {
  const bytes = ipaddr.parse(ip).toByteArray()
  let n = 0n
  for (const b of bytes) n = (n << 8n) | BigInt(b)
  return n
}

export function bigIntToIp(n: bigint, family: Family): string {
  const len = family === 4 ? 4 : 16
  const bytes = new Array<number>(len)
  for (let i = len - 1; i >= 0; i--) {
    bytes[i] = Number(n & 0xffn)
    n >>= 8n
  }
  return ipaddr.fromByteArray(bytes).toString()
}

/** Canonical text of an address ("::ffff:0:1" style for IPv6, dotted quad for IPv4); null when not an address. */
export function canonicalIp(ip: string): string | null {
  if (!isIP(ip)) return null
  return ipaddr.parse(ip).toString()
}

/** Parses "a.b.c.d/n" or an IPv6 CIDR; null when invalid. The address part is masked to the network. */
export function parseCidr(text: string): Cidr | null {
  if (!ipaddr.isValidCIDR(text)) return null
  const [addr, prefix] = ipaddr.parseCIDR(text)
  const family: Family = addr.kind() === 'ipv4' ? 4 : 6
  const bits = family === 4 ? 32 : 128
  const hostBits = BigInt(bits - prefix)
  const base = (ipToBigInt(addr.toString()) >> hostBits) << hostBits
  return { family, base, prefix, size: 1n << hostBits, text }
}

export function cidrContains(cidr: Cidr, ip: string): boolean {
  if (ipFamily(ip) !== cidr.family) return false
  const n = ipToBigInt(ip)
  return n >= cidr.base && n < cidr.base + cidr.size
}
