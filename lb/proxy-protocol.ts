// PROXY protocol headers towards backends (opt-in per Service with the annotation meshlet.io/proxy-protocol: v1|v2),
// so a backend behind meshlet can see the client's address. Built once per connection, before any client byte.

import { isIPv4 } from 'node:net'
import { ipToBigInt } from '../model/ip.ts'

export type ProxyProtocolVersion = 'v1' | 'v2'

const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a])

function unmapped(ip: string): string {
  return ip.startsWith('::ffff:') && isIPv4(ip.slice(7)) ? ip.slice(7) : ip
}

function ipBytes(ip: string, len: 4 | 16): Buffer {
  const b = Buffer.alloc(len)
  let n = ipToBigInt(ip)
  for (let i = len - 1; i >= 0; i--) {
    b[i] = Number(n & 0xffn)
    n >>= 8n
  }
  return b
}

export function proxyHeader(
  version: ProxyProtocolVersion,
  protocol: 'TCP' | 'UDP',
  src: string,
  srcPort: number,
  dst: string,
  dstPort: number,
): Buffer {
  src = unmapped(src)
  dst = unmapped(dst)
  const v4 = isIPv4(src) && isIPv4(dst)
  if (version === 'v1') {
    // v1 has no UDP and no mixed families: UNKNOWN tells the backend to use the connection's own addresses.
    if (protocol !== 'TCP' || (!v4 && (isIPv4(src) || isIPv4(dst)))) return Buffer.from('PROXY UNKNOWN\r\n')
    return Buffer.from(`PROXY ${v4 ? 'TCP4' : 'TCP6'} ${src} ${dst} ${srcPort} ${dstPort}\r\n`)
  }
  const sameFamily = v4 || (!isIPv4(src) && !isIPv4(dst))
  if (!sameFamily) return Buffer.concat([V2_SIGNATURE, Buffer.from([0x20, 0x00, 0x00, 0x00])]) // LOCAL
  const len = v4 ? 4 : 16
  const fam = (v4 ? 0x10 : 0x20) | (protocol === 'TCP' ? 0x01 : 0x02)
  const body = Buffer.alloc(len * 2 + 4)
  ipBytes(src, len).copy(body, 0)
  ipBytes(dst, len).copy(body, len)
  body.writeUInt16BE(srcPort, len * 2)
  body.writeUInt16BE(dstPort, len * 2 + 2)
  const head = Buffer.from([0x21, fam, 0, 0])
  head.writeUInt16BE(body.length, 2)
  return Buffer.concat([V2_SIGNATURE, head, body])
}
