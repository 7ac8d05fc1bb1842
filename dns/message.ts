// Upstream messages: a light scan that finds section boundaries, TTL fields and the OPT record without decoding
// RDATA, and the relay that turns a cached upstream reply into the answer for one client (ID, flags, question case,
// TTLs counted down, OPT, size limit, A/AAAA shuffle). Also copies RRs between messages with name recompression,
// for the ExternalName chase.

import { TYPE, shuffleFixed, skipName } from './wire.ts'

export interface Scan {
  readonly rcode: number
  readonly tc: boolean
  /** End of the question section: where the answer starts. */
  readonly questionEnd: number
  /** Start and end offsets of every RR, answer then authority then additional (the OPT excluded). */
  readonly rrStart: readonly number[]
  readonly rrEnd: readonly number[]
  readonly rrType: readonly number[]
  readonly anCount: number
  readonly nsCount: number
  /** Additional RRs other than the OPT. */
  readonly arCount: number
  /** Positive cache TTL: minimum over the answer RRs; -1 when there are none. */
  readonly minTtl: number
  /** Negative cache TTL from the authority SOA: min(TTL, MINIMUM); -1 without an SOA. */
  readonly negTtl: number
  /** Original TTLs, parallel to rrStart. */
  readonly ttl: readonly number[]
  /** OPT extended-rcode byte, 0 when none. */
  readonly extRcode: number
}

/** Scans a reply; null when it is malformed. */
export function scanMessage(buf: Buffer): Scan | null {
  const len = buf.length
  if (len < 12) return null
  const qd = buf.readUInt16BE(4)
  const an = buf.readUInt16BE(6)
  const ns = buf.readUInt16BE(8)
  const ar = buf.readUInt16BE(10)
  if (qd !== 1) return null
  let p = skipName(buf, 12, len)
  if (p < 0 || p + 4 > len) return null
  p += 4
  const questionEnd = p
  const rrStart: number[] = []
  const rrEnd: number[] = []
  const rrType: number[] = []
  const ttl: number[] = []
  let minTtl = -1
  let negTtl = -1
  let extRcode = 0
  let arCount = 0
  const total = an + ns + ar
  for (let i = 0; i < total; i++) {
    const start = p
    const ne = skipName(buf, p, len)
    if (ne < 0 || ne + 10 > len) return null
    const type = buf.readUInt16BE(ne)
    const t = buf.readUInt32BE(ne + 4)
    const rdlen = buf.readUInt16BE(ne + 8)
    const end = ne + 10 + rdlen
    if (end > len) return null
    p = end
    if (type === TYPE.OPT) {
      if (i >= an + ns) extRcode = (t >>> 24) & 0xff
      continue
    }
    if (i >= an + ns) arCount++
    rrStart.push(start)
    rrEnd.push(end)
    rrType.push(type)
    ttl.push(t)
    if (i < an) minTtl = minTtl < 0 ? t : Math.min(minTtl, t)
    else if (i < an + ns && type === TYPE.SOA) {
      // MINIMUM is the last 4 bytes of the SOA RDATA.
      const minimum = buf.readUInt32BE(end - 4)
      negTtl = Math.min(t, minimum)
      // A negative answer's SOA is relayed with that TTL and counted down from it (RFC 2308 §3, §5): a cache must
      // not hand out the SOA for longer than the negative answer itself lives.
      if (an === 0 || (buf[3]! & 0x0f) === 3) ttl[ttl.length - 1] = negTtl
    }
  }
  return {
    rcode: buf[3]! & 0x0f,
    tc: (buf[2]! & 0x02) !== 0,
    questionEnd,
    rrStart,
    rrEnd,
    rrType,
    anCount: an,
    nsCount: ns,
    arCount,
    minTtl,
    negTtl,
    ttl,
    extRcode,
  }
}

/** What the relay needs to know about the client. */
export interface ClientView {
  readonly id: number
  readonly rd: boolean
  readonly cd: boolean
  readonly edns: boolean
  readonly dnssecOk: boolean
  /** The client's question section (name + type + class) as received. */
  readonly question: Buffer
  /** Largest answer the client takes. */
  readonly limit: number
}

/** The OPT meshlet sends: root owner, UDP size 1232, version 0, DO copied; no options. */
export function writeOpt(out: Buffer, pos: number, payload: number, dnssecOk: boolean, extRcode: number): number {
  out[pos] = 0
  out.writeUInt16BE(TYPE.OPT, pos + 1)
  out.writeUInt16BE(payload, pos + 3)
  out[pos + 5] = extRcode
  out[pos + 6] = 0
  out[pos + 7] = dnssecOk ? 0x80 : 0
  out[pos + 8] = 0
  out.writeUInt16BE(0, pos + 9)
  return pos + 11
}

/**
 * Writes the client's answer from an upstream reply into `out` (at least 65,535 + 2 bytes) and returns its length.
 * `elapsed` (seconds) is subtracted from every TTL. The upstream rcode and authority are passed through; AA=0,
 * RA=1, RD and CD from the client. Additional RRs are dropped before answers are cut, and TC=1 only when answers
 * were cut (RFC 2181 §9).
 */
export function relay(
  src: Buffer,
  scan: Scan,
  client: ClientView,
  elapsed: number,
  out: Buffer,
  shuffle: boolean,
): number {
  out.writeUInt16BE(client.id, 0)
  let pos = 12
  client.question.copy(out, 12)
  pos += client.question.length
  const optLen = client.edns ? 11 : 0
  const limit = client.limit - optLen
  const an = scan.anCount
  const nsEndIdx = an + scan.nsCount
  const all = scan.rrStart.length
  const sizeOf = (from: number, to: number) => {
    let n = 0
    for (let i = from; i < to; i++) n += scan.rrEnd[i]! - scan.rrStart[i]!
    return n
  }
  // Compressed names point into the upstream message, so RRs are copied at the same relative place: the question is
  // the same length (only the case differs), and sections are copied in order, so offsets before each RR are kept
  // as long as nothing before it is removed. The OPT is always last in what meshlet relays.
  const ansBytes = sizeOf(0, an)
  const nsBytes = sizeOf(an, nsEndIdx)
  const arBytes = sizeOf(nsEndIdx, all)
  let ancount = an
  let nscount = scan.nsCount
  let arcount = scan.arCount
  let tc = false
  let copyTo: number
  if (pos + ansBytes + nsBytes + arBytes <= limit) copyTo = all
  else if (pos + ansBytes + nsBytes <= limit) {
    copyTo = nsEndIdx
    arcount = 0
  } else {
    let n = 0
    let size = pos
    while (n < an && size + scan.rrEnd[n]! - scan.rrStart[n]! <= limit) {
      size += scan.rrEnd[n]! - scan.rrStart[n]!
      n++
    }
    copyTo = n
    ancount = n
    nscount = 0
    arcount = 0
    tc = true
  }
  // RRs between the question and the first OPT-free stretch are contiguous unless an OPT sits among them; copy
  // each RR individually and check the offset is unchanged (pointers stay valid).
  for (let i = 0; i < copyTo; i++) {
    const s = scan.rrStart[i]!
    const e = scan.rrEnd[i]!
    if (s !== pos) {
      // An OPT was skipped before this RR: a pointer into later RRs would be off. Upstreams put the OPT last; if not,
      // stop here and mark the message truncated rather than relay bad pointers.
      if (i < an) {
        ancount = i
        nscount = 0
        arcount = 0
        tc = true
      } else if (i < nsEndIdx) {
        nscount = i - an
        arcount = 0
      } else arcount = i - nsEndIdx
      break
    }
    src.copy(out, pos, s, e)
    const ttlAt = pos + (skipName(src, s, e) - s) + 4
    const t = scan.ttl[i]!
    out.writeUInt32BE(t > elapsed ? t - elapsed : 0, ttlAt)
    pos += e - s
  }
  if (shuffle && ancount > 1) shuffleAddresses(out, scan, ancount)
  out[2] = 0x80 | (tc ? 0x02 : 0) | (client.rd ? 1 : 0)
  out[3] = 0x80 | (client.cd ? 0x10 : 0) | scan.rcode
  out.writeUInt16BE(1, 4)
  out.writeUInt16BE(ancount, 6)
  out.writeUInt16BE(nscount, 8)
  out.writeUInt16BE(arcount + (client.edns ? 1 : 0), 10)
  if (client.edns) pos = writeOpt(out, pos, 1232, client.dnssecOk, scan.extRcode)
  return pos
}

/**
 * Shuffles the RDATA of A (or AAAA) answer RRs whose owner is the same 2-byte pointer: the records stay where they
 * are, so no compression pointer changes (CoreDNS loadbalance; CNAMEs stay first).
 */
function shuffleAddresses(out: Buffer, scan: Scan, ancount: number): void {
  for (const type of [TYPE.A, TYPE.AAAA]) {
    const size = type === TYPE.A ? 4 : 16
    const idx: number[] = []
    let owner = -1
    for (let i = 0; i < ancount; i++) {
      if (scan.rrType[i] !== type) continue
      const s = scan.rrStart[i]!
      if ((out[s]! & 0xc0) !== 0xc0) continue
      const ptr = out.readUInt16BE(s)
      if (owner === -1) owner = ptr
      if (ptr !== owner) continue
      idx.push(s + 12)
    }
    shuffleFixed(out, idx, size)
  }
}

/** Reads a possibly compressed name as lowercase labels; null when malformed. */
export function readName(buf: Buffer, p: number): { labels: string[]; end: number } | null {
  const labels: string[] = []
  let end = -1
  let total = 0
  for (let guard = 0; guard < 128; guard++) {
    if (p >= buf.length) return null
    const l = buf[p]!
    if (l === 0) {
      if (end < 0) end = p + 1
      return { labels, end }
    }
    if ((l & 0xc0) === 0xc0) {
      if (p + 1 >= buf.length) return null
      if (end < 0) end = p + 2
      const next = ((l & 0x3f) << 8) | buf[p + 1]!
      if (next >= p) return null // pointers go backwards only
      p = next
      continue
    }
    if (l > 63 || p + 1 + l > buf.length) return null
    total += l + 1
    if (total > 255) return null
    labels.push(buf.toString('latin1', p + 1, p + 1 + l).toLowerCase())
    p += 1 + l
  }
  return null
}

/**
 * A whole-message writer with name compression, for the general path (ExternalName chases). Names are written
 * from labels; suffixes are remembered by their lowercase text.
 */
export class MessageWriter {
  readonly buf: Buffer
  pos = 0
  readonly #names = new Map<string, number>()

  constructor(buf: Buffer) {
    this.buf = buf
  }

  name(labels: readonly string[]): void {
    for (let i = 0; i < labels.length; i++) {
      const suffix = labels.slice(i).join('.')
      const at = this.#names.get(suffix)
      if (at !== undefined) {
        this.buf.writeUInt16BE(0xc000 | at, this.pos)
        this.pos += 2
        return
      }
      if (this.pos < 0x3fff) this.#names.set(suffix, this.pos)
      const b = Buffer.from(labels[i]!, 'latin1')
      this.buf[this.pos++] = b.length
      b.copy(this.buf, this.pos)
      this.pos += b.length
    }
    this.buf[this.pos++] = 0
  }

  /** Copies one RR from `src` at `p`, recompressing the names it knows in RDATA; returns false when malformed. */
  copyRR(src: Buffer, p: number, ownerPointer: number, ttlCap: number): boolean {
    const owner = readName(src, p)
    if (!owner) return false
    const ne = owner.end
    if (ne + 10 > src.length) return false
    const type = src.readUInt16BE(ne)
    const rdlen = src.readUInt16BE(ne + 8)
    const rd = ne + 10
    if (rd + rdlen > src.length) return false
    if (ownerPointer >= 0) {
      this.buf.writeUInt16BE(0xc000 | ownerPointer, this.pos)
      this.pos += 2
    } else this.name(owner.labels)
    src.copy(this.buf, this.pos, ne, ne + 4)
    this.buf.writeUInt32BE(Math.min(src.readUInt32BE(ne + 4), ttlCap), this.pos + 4)
    this.pos += 8
    const lenAt = this.pos
    this.pos += 2
    const start = this.pos
    let prefix = 0
    let names = 0
    if (type === TYPE.CNAME || type === TYPE.NS || type === TYPE.PTR) names = 1
    else if (type === TYPE.MX) {
      prefix = 2
      names = 1
    } else if (type === TYPE.SRV) {
      prefix = 6
      names = 1
    } else if (type === TYPE.SOA) names = 2
    if (names === 0) {
      src.copy(this.buf, this.pos, rd, rd + rdlen)
      this.pos += rdlen
    } else {
      src.copy(this.buf, this.pos, rd, rd + prefix)
      this.pos += prefix
      let q = rd + prefix
      for (let i = 0; i < names; i++) {
        const n = readName(src, q)
        if (!n) return false
        this.name(n.labels)
        q = n.end
      }
      src.copy(this.buf, this.pos, q, rd + rdlen)
      this.pos += rd + rdlen - q
    }
    this.buf.writeUInt16BE(this.pos - start, lenAt)
    return true
  }
}
