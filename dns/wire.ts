// DNS wire format by hand: header checks and question parsing for every query (before anything is decoded), and
// the small writer the zone uses to precompute answer bytes. dns-packet is only used on the general path
// (ExternalName chases); see dns/answer.ts.
//
// Message layout meshlet writes (RFC 1035 §4.1):
//
//   0        12              12+qlen+4
//   | header | question echo | answer | authority | additional [| OPT] |
//
// The question is echoed byte for byte, so the offsets of the query name's labels are known before the answer is
// written: owner names are the pointer 0xC00C, and the zone apex is a pointer into the question.

export const TYPE = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  PTR: 12,
  HINFO: 13,
  MX: 15,
  TXT: 16,
  AAAA: 28,
  SRV: 33,
  OPT: 41,
  TKEY: 249,
  TSIG: 250,
  IXFR: 251,
  AXFR: 252,
  MAILB: 253,
  MAILA: 254,
  ANY: 255,
} as const

export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5, BADVERS: 16 } as const

export const CLASS_IN = 1

/** Largest UDP answer whatever the client advertises (DNS flag day 2020). */
export const UDP_PAYLOAD_CAP = 1232
export const MAX_LABELS = 128

/**
 * One parsed query, reused per listener: every field set here, no allocation per packet except the lookup key.
 * `status` is what the header/question check decided.
 */
export class Query {
  /** 'drop' | 'ok' | an error rcode to answer with. */
  status: 'drop' | 'ok' | 'formerr' | 'notimp' | 'badvers' = 'drop'
  id = 0
  opcode = 0
  rd = false
  cd = false
  /** Length of the question name in wire form (with the root byte). 0 when it did not parse. */
  qnameLen = 0
  qtype = 0
  qclass = 0
  /** Lowercased wire form of the name as a latin1 string: the lookup key. */
  key = ''
  /** Offsets (relative to the start of the name) of each label, and the label count. */
  readonly labelOffsets = new Int32Array(MAX_LABELS)
  labelCount = 0
  /** True when a label holds a byte that cannot be written in presentation form safely ('.', '\\', non-printable). */
  oddBytes = false
  hasUpper = false
  edns = false
  ednsVersion = 0
  ednsSize = 0
  dnssecOk = false
}

function isOddByte(b: number): boolean {
  return (
    b <= 0x20 ||
    b >= 0x7f ||
    b === 0x2e ||
    b === 0x5c ||
    b === 0x22 ||
    b === 0x28 ||
    b === 0x29 ||
    b === 0x3b ||
    b === 0x40 ||
    b === 0x24
  )
}

/**
 * Checks the 12-byte header, parses the question and any OPT record, and fills `q`. Never throws and never reads
 * past `len`. Order follows specs/dns.md §4.15: drop (short, QR=1), NOTIMP (opcode), FORMERR (counts, question,
 * additional section, meta qtype), BADVERS (EDNS version).
 */
export function parseQuery(buf: Buffer, len: number, q: Query): void {
  q.status = 'drop'
  q.qnameLen = 0
  q.labelCount = 0
  q.edns = false
  q.ednsVersion = 0
  q.ednsSize = 0
  q.dnssecOk = false
  q.key = ''
  if (len < 12) return
  const flags = buf[2]!
  if (flags & 0x80) return // QR=1: a response, never answer it (loops with other servers)
  q.id = (buf[0]! << 8) | buf[1]!
  q.opcode = (flags >> 3) & 0x0f
  q.rd = (flags & 1) === 1
  q.cd = (buf[3]! & 0x10) !== 0
  if (q.opcode !== 0) {
    q.status = 'notimp'
    return
  }
  const qd = (buf[4]! << 8) | buf[5]!
  const an = (buf[6]! << 8) | buf[7]!
  const ns = (buf[8]! << 8) | buf[9]!
  const ar = (buf[10]! << 8) | buf[11]!
  q.status = 'formerr'
  if (qd !== 1 || an !== 0 || ns !== 0 || ar > 8) return
  // Question name: plain labels only (a pointer in the first name can only point forward or at itself).
  let p = 12
  let upper = false
  let odd = false
  let n = 0
  for (;;) {
    if (p >= len) return
    const l = buf[p]!
    if (l === 0) {
      p++
      break
    }
    if (l > 63) return
    if (n >= MAX_LABELS) return
    q.labelOffsets[n++] = p - 12
    const end = p + 1 + l
    if (end > len) return
    for (let i = p + 1; i < end; i++) {
      const c = buf[i]!
      if (c >= 0x41 && c <= 0x5a) upper = true
      else if (isOddByte(c)) odd = true
    }
    p = end
    if (p - 12 > 254) return // 255 octets with the root byte
  }
  if (p + 4 > len) return
  q.qnameLen = p - 12
  q.labelCount = n
  q.hasUpper = upper
  q.oddBytes = odd
  q.qtype = (buf[p]! << 8) | buf[p + 1]!
  q.qclass = (buf[p + 2]! << 8) | buf[p + 3]!
  p += 4
  // Additional section: at most one OPT; anything else is skipped (TSIG is not supported and simply ignored).
  let opts = 0
  for (let i = 0; i < ar; i++) {
    const nameEnd = skipName(buf, p, len)
    if (nameEnd < 0 || nameEnd + 10 > len) return
    const type = (buf[nameEnd]! << 8) | buf[nameEnd + 1]!
    const rdlen = (buf[nameEnd + 8]! << 8) | buf[nameEnd + 9]!
    const next = nameEnd + 10 + rdlen
    if (next > len) return
    if (type === TYPE.OPT) {
      if (++opts > 1) return
      if (nameEnd !== p + 1 || buf[p] !== 0) return // OPT owner must be the root
      q.edns = true
      q.ednsSize = (buf[nameEnd + 2]! << 8) | buf[nameEnd + 3]!
      q.ednsVersion = buf[nameEnd + 5]!
      q.dnssecOk = (buf[nameEnd + 6]! & 0x80) !== 0
    }
    p = next
  }
  const t = q.qtype
  if (t === TYPE.OPT || t === TYPE.TSIG || t === TYPE.TKEY || t === TYPE.MAILA || t === TYPE.MAILB) return
  if (q.edns && q.ednsVersion !== 0) {
    q.status = 'badvers'
    return
  }
  q.key = lowerKey(buf, 12, 12 + q.qnameLen, upper)
  q.status = 'ok'
}

/** Latin1 string of the wire-form name, ASCII letters lowercased (DNS case folding is ASCII only, RFC 4343). */
export function lowerKey(buf: Buffer, start: number, end: number, hasUpper: boolean): string {
  const s = buf.toString('latin1', start, end)
  if (!hasUpper) return s
  let out = ''
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    out += c >= 0x41 && c <= 0x5a ? String.fromCharCode(c + 32) : s[i]
  }
  return out
}

/** Offset just past a (possibly compressed) name, or -1 when it runs past `len` or is malformed. */
export function skipName(buf: Buffer, p: number, len: number): number {
  for (let guard = 0; guard < 128; guard++) {
    if (p >= len) return -1
    const l = buf[p]!
    if (l === 0) return p + 1
    if ((l & 0xc0) === 0xc0) return p + 2 <= len ? p + 2 : -1
    if (l > 63) return -1
    p += 1 + l
  }
  return -1
}

/** Wire form of a presentation name ("web.default.svc.cluster.local", no trailing dot needed), lowercased. */
export function nameToWire(name: string): Buffer {
  const labels = name
    .replace(/\.$/, '')
    .split('.')
    .filter((l) => l.length > 0)
  const parts: Buffer[] = []
  for (const l of labels) {
    const b = Buffer.from(l.toLowerCase(), 'latin1')
    if (b.length > 63) throw new RangeError(`label too long: ${l}`)
    parts.push(Buffer.from([b.length]), b)
  }
  parts.push(Buffer.from([0]))
  return Buffer.concat(parts)
}

/** The lookup key of a presentation name (the same string `parseQuery` produces). */
export function nameKey(name: string): string {
  return nameToWire(name).toString('latin1')
}

/**
 * Builds answer sections at snapshot time. Offsets are absolute (the writer knows where the section starts in the
 * final message), so compression pointers stay valid when the bytes are copied behind the echoed question.
 */
export class SectionWriter {
  #buf = Buffer.alloc(512)
  #pos = 0
  readonly #base: number
  /** Lowercase suffix (dotted) → absolute offset, for compression. */
  readonly #names = new Map<string, number>()

  constructor(base: number) {
    this.#base = base
  }

  get length(): number {
    return this.#pos
  }

  #ensure(n: number): void {
    if (this.#pos + n <= this.#buf.length) return
    const next = Buffer.alloc(Math.max(this.#buf.length * 2, this.#pos + n))
    this.#buf.copy(next, 0, 0, this.#pos)
    this.#buf = next
  }

  u8(v: number): void {
    this.#ensure(1)
    this.#buf[this.#pos++] = v
  }

  u16(v: number): void {
    this.#ensure(2)
    this.#buf.writeUInt16BE(v, this.#pos)
    this.#pos += 2
  }

  u32(v: number): void {
    this.#ensure(4)
    this.#buf.writeUInt32BE(v >>> 0, this.#pos)
    this.#pos += 4
  }

  bytes(b: Uint8Array): void {
    this.#ensure(b.length)
    this.#buf.set(b, this.#pos)
    this.#pos += b.length
  }

  /** A lowercase name, compressed against names written earlier in this section. */
  name(name: string): void {
    const labels = name
      .replace(/\.$/, '')
      .toLowerCase()
      .split('.')
      .filter((l) => l.length > 0)
    for (let i = 0; i < labels.length; i++) {
      const suffix = labels.slice(i).join('.')
      const at = this.#names.get(suffix)
      if (at !== undefined) {
        this.u16(0xc000 | at)
        return
      }
      const abs = this.#base + this.#pos
      if (abs < 0x3fff) this.#names.set(suffix, abs)
      const b = Buffer.from(labels[i]!, 'latin1')
      this.u8(b.length)
      this.bytes(b)
    }
    this.u8(0)
  }

  /** RR header with the owner given as a pointer (0xC00C is the question name). */
  rrPointer(ptr: number, type: number, ttl: number): void {
    this.u16(0xc000 | ptr)
    this.u16(type)
    this.u16(CLASS_IN)
    this.u32(ttl)
  }

  rrNamed(owner: string, type: number, ttl: number): void {
    this.name(owner)
    this.u16(type)
    this.u16(CLASS_IN)
    this.u32(ttl)
  }

  /** Writes RDLENGTH after `fn` has written the RDATA. */
  rdata(fn: () => void): void {
    const at = this.#pos
    this.u16(0)
    fn()
    this.#buf.writeUInt16BE(this.#pos - at - 2, at)
  }

  take(): Buffer {
    return Buffer.from(this.#buf.subarray(0, this.#pos))
  }
}

/** "10.244.1.5" or an IPv6 address → its 4 or 16 bytes. */
export function ipBytes(ip: string): Buffer {
  if (ip.includes(':')) {
    const out = Buffer.alloc(16)
    const [head, tail] = ip.includes('::') ? (ip.split('::') as [string, string]) : [ip, '']
    const h = head ? head.split(':') : []
    const t = tail ? tail.split(':') : []
    const groups = [...h, ...new Array<string>(8 - h.length - t.length).fill('0'), ...t]
    for (let i = 0; i < 8; i++) out.writeUInt16BE(parseInt(groups[i]!, 16), i * 2)
    return out
  }
  return Buffer.from(ip.split('.').map((x) => Number(x)))
}

/** Reverse-lookup name of an address: "5.1.244.10.in-addr.arpa" or the 32 reversed nibbles under ip6.arpa. */
export function reverseName(ip: string): string {
  const b = ipBytes(ip)
  if (b.length === 4) return `${b[3]}.${b[2]}.${b[1]}.${b[0]}.in-addr.arpa`
  const nibbles: string[] = []
  for (let i = 15; i >= 0; i--) nibbles.push((b[i]! & 0xf).toString(16), (b[i]! >> 4).toString(16))
  return `${nibbles.join('.')}.ip6.arpa`
}

/**
 * Fisher–Yates over fixed-size fields (A or AAAA RDATA: 4 or 16 bytes) at the given offsets of `out`, swapped byte by
 * byte (cheaper than Buffer.copy calls at these sizes). The one shuffle of every path: zone answers, the UDP fast
 * paths (dns/fast.ts, dns/fast-cache.ts) and relayed upstream replies (dns/message.ts).
 */
export function shuffleFixed(out: Buffer, offsets: ArrayLike<number>, size: number): void {
  for (let i = offsets.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    if (j === i) continue
    const a = offsets[i]!
    const b = offsets[j]!
    for (let k = 0; k < size; k++) {
      const x = out[a + k]!
      out[a + k] = out[b + k]!
      out[b + k] = x
    }
  }
}

export const FNV_OFFSET = 0x811c9dc5 | 0
export const FNV_PRIME = 16777619

/**
 * A plain UDP query as the fast paths take it, filled by `scanUdpQuery` (one instance per caller, reused: nothing is
 * allocated per query). Both fast paths (zone, dns/fast.ts; cache, dns/fast-cache.ts) read the same scan, so a query
 * that misses the zone is not walked again for the cache.
 */
export class UdpQuery {
  /** FNV-1a over the name's lowercase wire bytes, the root byte included. */
  hash = 0
  /** The name has upper-case letters (the reply echoes them: 0x20). */
  upper = false
  /** Wire length of the name, root byte included; the name starts at 12. */
  nameLen = 0
  /** QTYPE (the class is IN). */
  qtype = 0
  /** An OPT record (version 0) ends the query. */
  edns = false
  /** Largest reply the client takes: 512 without EDNS, max(512, min(its size, 1232)) with. */
  limit = 512
  dnssecOk = false
  /** Offsets of the name's length bytes, `labelCount` of them. */
  readonly labels = new Int32Array(128)
  labelCount = 0
}

/**
 * Scans a UDP query for the fast paths: QR=0, opcode QUERY, QDCOUNT 1, AN/NS 0, AR 0 or 1 (a version-0 OPT at the
 * end), an uncompressed name of at most 255 bytes, class IN. False for anything else (the general path answers it).
 */
export function scanUdpQuery(msg: Buffer, q: UdpQuery): boolean {
  const len = msg.length
  if (len < 17) return false
  // QR=0, opcode QUERY; QDCOUNT 1, ANCOUNT 0, NSCOUNT 0, ARCOUNT 0 or 1.
  if (
    (msg[2]! & 0xf8) !== 0 ||
    msg[4] !== 0 ||
    msg[5] !== 1 ||
    (msg[6]! | msg[7]! | msg[8]! | msg[9]! | msg[10]!) !== 0
  )
    return false
  const ar = msg[11]!
  if (ar > 1) return false
  const labels = q.labels
  let h = FNV_OFFSET
  let upper = false
  let p = 12
  let n = 0
  for (;;) {
    if (p >= len) return false
    const l = msg[p]!
    if (l === 0) break
    if (l > 63 || n === 128) return false
    labels[n++] = p
    h = Math.imul(h ^ l, FNV_PRIME)
    const end = p + 1 + l
    if (end > len) return false
    for (let i = p + 1; i < end; i++) {
      let c = msg[i]!
      if (c >= 0x41 && c <= 0x5a) {
        c += 32
        upper = true
      }
      h = Math.imul(h ^ c, FNV_PRIME)
    }
    p = end
  }
  h = Math.imul(h, FNV_PRIME) // the root byte: h ^ 0
  const nameLen = p + 1 - 12
  if (nameLen > 255) return false
  p++
  if (p + 4 > len) return false
  if (msg[p + 2] !== 0 || msg[p + 3] !== 1) return false
  q.qtype = (msg[p]! << 8) | msg[p + 1]!
  p += 4
  if (ar === 1) {
    // A plain OPT at the end: root owner, type 41, version 0.
    if (p + 11 > len || msg[p] !== 0 || msg[p + 1] !== 0 || msg[p + 2] !== TYPE.OPT || msg[p + 6] !== 0) return false
    if (p + 11 + ((msg[p + 9]! << 8) | msg[p + 10]!) !== len) return false
    q.edns = true
    const size = (msg[p + 3]! << 8) | msg[p + 4]!
    q.limit = size > UDP_PAYLOAD_CAP ? UDP_PAYLOAD_CAP : size < 512 ? 512 : size
    q.dnssecOk = (msg[p + 7]! & 0x80) !== 0
  } else {
    if (p !== len) return false
    q.edns = false
    q.limit = 512
    q.dnssecOk = false
  }
  q.hash = h
  q.upper = upper
  q.nameLen = nameLen
  q.labelCount = n
  return true
}
