// The resolver: one query in, one answer out. In-zone names (and PTR names meshlet owns) are answered synchronously
// from the precomputed zone (dns/zone.ts): copy the header, echo the question, copy the RRset bytes, add the SOA for
// negative answers. Everything else returns a Promise: the forwarder (dns/forwarder.ts) and the ExternalName chase.

import {
  Query,
  RCODE,
  TYPE,
  UDP_PAYLOAD_CAP,
  UdpQuery,
  lowerKey,
  nameKey,
  parseQuery,
  scanUdpQuery,
  shuffleFixed,
} from './wire.ts'
import type { NameEntry, Zone } from './zone.ts'
import type { Forwarder } from './forwarder.ts'
import { FastPath } from './fast.ts'
import { FastCache } from './fast-cache.ts'
import type { RecursionAcl } from './recursion-acl.ts'
import { MessageWriter, readName, relay, scanMessage, writeOpt, type ClientView } from './message.ts'

const REVERSE4 = nameKey('in-addr.arpa')
const REVERSE6 = nameKey('ip6.arpa')
const LOCALHOST = nameKey('localhost')
const MAX_CHAIN = 10

/** Counts per (qtype, rcode), read by the metrics collector: an array increment per query, no label hashing. */
export const COUNTED_TYPES = [
  'A',
  'AAAA',
  'SRV',
  'PTR',
  'TXT',
  'CNAME',
  'SOA',
  'NS',
  'ANY',
  'MX',
  'HTTPS',
  'other',
] as const
const TYPE_INDEX = new Map<number, number>([
  [TYPE.A, 0],
  [TYPE.AAAA, 1],
  [TYPE.SRV, 2],
  [TYPE.PTR, 3],
  [TYPE.TXT, 4],
  [TYPE.CNAME, 5],
  [TYPE.SOA, 6],
  [TYPE.NS, 7],
  [TYPE.ANY, 8],
  [TYPE.MX, 9],
  [65, 10],
])
export const RCODE_SLOTS = 24

/** Index of the (qtype, rcode) counter in `Resolver.counts`. */
export function countIndex(qtype: number, rcode: number): number {
  const t = TYPE_INDEX.get(qtype) ?? COUNTED_TYPES.length - 1
  return t * RCODE_SLOTS + (rcode < RCODE_SLOTS ? rcode : RCODE_SLOTS - 1)
}

/** Length of the counter array (a SharedArrayBuffer of this many doubles when workers count). */
export const COUNTERS = COUNTED_TYPES.length * RCODE_SLOTS

function endsAtLabel(key: string, suffix: string, q: Query): boolean {
  if (!key.endsWith(suffix)) return false
  const off = key.length - suffix.length
  if (off === 0) return true
  for (let i = 0; i < q.labelCount; i++) if (q.labelOffsets[i] === off) return true
  return false
}

/** The fields of a query the asynchronous paths keep (the Query object is reused for the next packet). */
interface Pending extends ClientView {
  readonly tcp: boolean
  readonly qtype: number
  readonly key: string
}

export class Resolver {
  #zone: Zone
  #loaded = false
  /** Set once the listener knows its own address (loop detection needs it); null: every forwarded name is SERVFAIL. */
  forwarder: Forwarder | null = null
  /** Scratch: every answer is written here, then copied into a Buffer of its exact size. */
  readonly #out = Buffer.alloc(65535 + 2)
  readonly counts: Float64Array
  /** The UDP fast path of the current zone (dns/fast.ts); null before the first Snapshot or when not wanted. */
  #fast: FastPath | null = null
  readonly #udpQuery = new UdpQuery()
  readonly #wantFast: boolean
  /**
   * Set in a DNS worker thread: forwarded names and ExternalName chases are handed to the main thread (which owns
   * the forwarder and its cache) with the whole query, and its reply is sent as is.
   */
  delegate: ((msg: Buffer, tcp: boolean, client: string) => Promise<Buffer | null>) | null = null
  /** Who may have names outside the zone forwarded (dns/recursion-acl.ts); null: everyone. */
  acl: RecursionAcl | null = null
  /**
   * Cached forwards answered on the fast path (dns/fast-cache.ts), a mirror of the forwarder's cache filled by its
   * owner (index.ts, or the main thread's broadcast in a worker); null where this thread does not serve UDP.
   */
  readonly cache: FastCache | null

  /** `cacheHits`: where the fast cache counts its hits (a SharedArrayBuffer's view in a worker). */
  constructor(initial: Zone, opts: { counts?: Float64Array; fast?: boolean; cacheHits?: Float64Array } = {}) {
    this.#zone = initial
    this.counts = opts.counts ?? new Float64Array(COUNTERS)
    this.#wantFast = opts.fast ?? true
    this.cache = this.#wantFast ? new FastCache(this.counts, countIndex, opts.cacheHits) : null
  }

  /**
   * The UDP reply from the fast path, or null when `resolve` must answer. `busy`: the socket has a queued send
   * (the returned Buffer may be a template that a queued send still references; then it is copied). `client`: the
   * source address, for the recursion ACL on cached forwards.
   */
  fast(msg: Buffer, busy: boolean, client: string): Buffer | null {
    const f = this.#fast
    const c = this.cache
    if (f === null && (c === null || c.size === 0)) return null
    // Scanned once for both fast paths.
    const q = this.#udpQuery
    if (!scanUdpQuery(msg, q)) return null
    if (f !== null) {
      const r = f.answerScanned(msg, q, busy)
      if (r !== null) return r
    }
    if (c === null || c.size === 0) return null
    // A client that may not recurse gets REFUSED from the general path, cached or not.
    if (this.acl !== null && !this.acl.allows(client)) return null
    return c.answer(msg, q, busy)
  }

  get zone(): Zone {
    return this.#zone
  }

  /**
   * Swaps in the index built from a new Snapshot. `changed`: the wire keys whose entries differ from the zone set
   * last (dns/zone.ts ZoneIndex.apply), so the fast path updates only those; null rebuilds it.
   */
  setZone(zone: Zone, changed: Iterable<string> | null = null): void {
    if (!this.#wantFast) this.#fast = null
    else if (changed !== null && this.#fast !== null) this.#fast.update(zone, changed)
    else this.#fast = new FastPath(zone, this.counts, countIndex)
    this.#zone = zone
    this.#loaded = true
  }

  get loaded(): boolean {
    return this.#loaded
  }

  #count(qtype: number, rcode: number): void {
    this.counts[countIndex(qtype, rcode)]!++
  }

  /** Largest answer for this query (specs/dns.md §10 "Size"). */
  static limit(q: Query, tcp: boolean): number {
    if (tcp) return 65535
    if (!q.edns) return 512
    return Math.max(512, Math.min(q.ednsSize, UDP_PAYLOAD_CAP))
  }

  /**
   * Answers one parsed query from `client` (its IP literal, for the recursion ACL). Returns the wire answer (with
   * the 2-byte length prefix when `tcp`), null to drop, or a Promise for forwarded names and ExternalName chases.
   */
  resolve(msg: Buffer, q: Query, tcp: boolean, client: string): Buffer | null | Promise<Buffer | null> {
    switch (q.status) {
      case 'drop':
        return null
      case 'notimp':
        return this.#error(msg, q, RCODE.NOTIMP, false, tcp)
      case 'formerr':
        return this.#error(msg, q, RCODE.FORMERR, q.qnameLen > 0, tcp)
      case 'badvers':
        return this.#error(msg, q, RCODE.BADVERS, true, tcp)
      case 'ok':
        break
    }
    if (q.qclass !== 1 && q.qclass !== 255) return this.#error(msg, q, RCODE.REFUSED, true, tcp)
    if (q.qtype === TYPE.AXFR || q.qtype === TYPE.IXFR) return this.#error(msg, q, RCODE.REFUSED, true, tcp)
    const zone = this.#zone
    const key = q.key
    if (endsAtLabel(key, zone.zoneKey, q)) {
      if (!this.#loaded) return this.#negative(msg, q, tcp, RCODE.SERVFAIL)
      const entry = zone.names.get(key)
      if (!entry) return this.#negative(msg, q, tcp, RCODE.NXDOMAIN)
      return this.#entry(msg, q, tcp, entry, client)
    }
    if (endsAtLabel(key, REVERSE4, q) || endsAtLabel(key, REVERSE6, q)) {
      const entry = this.#loaded ? zone.names.get(key) : undefined
      if (entry) return this.#entry(msg, q, tcp, entry, client)
    } else if (endsAtLabel(key, LOCALHOST, q)) {
      return this.#localhost(msg, q, tcp)
    }
    return this.#forward(msg, q, tcp, client)
  }

  #recursionAllowed(client: string): boolean {
    return this.acl === null || this.acl.allows(client)
  }

  /** REFUSED with RA=0 for a client that may not recurse (as unbound's access-control `refuse`). */
  #refuseRecursion(msg: Buffer, q: Query, tcp: boolean): Buffer {
    const b = this.#error(msg, q, RCODE.REFUSED, true, tcp)
    b[tcp ? 5 : 3] = b[tcp ? 5 : 3]! & 0x7f
    return b
  }

  #header(msg: Buffer, q: Query, aa: boolean, rcode: number): void {
    const out = this.#out
    out[0] = msg[0]!
    out[1] = msg[1]!
    out[2] = 0x80 | (q.opcode << 3) | (aa ? 0x04 : 0) | (q.rd ? 1 : 0)
    out[3] = 0x80 | (q.cd ? 0x10 : 0) | (rcode & 0x0f)
  }

  #finish(len: number, tcp: boolean): Buffer {
    const out = this.#out
    if (tcp) {
      const b = Buffer.allocUnsafe(len + 2)
      b.writeUInt16BE(len, 0)
      out.copy(b, 2, 0, len)
      return b
    }
    const b = Buffer.allocUnsafe(len)
    out.copy(b, 0, 0, len)
    return b
  }

  #error(msg: Buffer, q: Query, rcode: number, echo: boolean, tcp: boolean): Buffer {
    const out = this.#out
    this.#header(msg, q, false, rcode)
    const qlen = echo && q.qnameLen > 0 ? q.qnameLen + 4 : 0
    out.writeUInt16BE(qlen > 0 ? 1 : 0, 4)
    out.writeUInt32BE(0, 6)
    let pos = 12
    if (qlen > 0) {
      msg.copy(out, 12, 12, 12 + qlen)
      pos += qlen
    }
    const withOpt = q.edns || rcode === RCODE.BADVERS
    out.writeUInt16BE(withOpt ? 1 : 0, 10)
    if (withOpt) pos = writeOpt(out, pos, UDP_PAYLOAD_CAP, q.dnssecOk, rcode >> 4)
    this.#count(q.qtype, rcode)
    return this.#finish(pos, tcp)
  }

  /** Header + question echo; returns the offset after the question. */
  #start(msg: Buffer, q: Query, aa: boolean, rcode: number): number {
    const out = this.#out
    this.#header(msg, q, aa, rcode)
    out[4] = 0
    out[5] = 1
    const end = 12 + q.qnameLen + 4
    msg.copy(out, 12, 12, end)
    return end
  }

  #counts(an: number, ns: number, ar: number, q: Query): void {
    const out = this.#out
    out.writeUInt16BE(an, 6)
    out.writeUInt16BE(ns, 8)
    out.writeUInt16BE(ar + (q.edns ? 1 : 0), 10)
  }

  /** NXDOMAIN / NODATA / not-synced SERVFAIL with the zone SOA in the authority section. */
  #negative(msg: Buffer, q: Query, tcp: boolean, rcode: number): Buffer {
    let pos = this.#start(msg, q, rcode !== RCODE.SERVFAIL, rcode)
    pos = this.#writeSoa(pos, 12 + q.qnameLen - this.#zone.zoneWireLen)
    this.#counts(0, 1, 0, q)
    if (q.edns) pos = writeOpt(this.#out, pos, UDP_PAYLOAD_CAP, q.dnssecOk, 0)
    this.#count(q.qtype, rcode)
    return this.#finish(pos, tcp)
  }

  /** `<zone> ttl IN SOA ns.dns.<zone>. hostmaster.<zone>. serial 7200 1800 86400 ttl`, owner a pointer into the question. */
  #writeSoa(pos: number, zoneOffset: number): number {
    const out = this.#out
    const z = this.#zone
    out.writeUInt16BE(0xc000 | zoneOffset, pos)
    out.writeUInt16BE(TYPE.SOA, pos + 2)
    out.writeUInt16BE(1, pos + 4)
    out.writeUInt32BE(z.soaTtl, pos + 6)
    const rdStart = pos + 12
    let p = rdStart
    z.soaMname.copy(out, p)
    p += z.soaMname.length
    out[p] = 10
    out.write('hostmaster', p + 1, 'latin1')
    p += 11
    out.writeUInt16BE(0xc000 | (rdStart + 7), p) // "\x02ns\x03dns" is 7 bytes: the zone follows
    p += 2
    z.soaNumbers.copy(out, p)
    p += 20
    out.writeUInt16BE(p - rdStart, pos + 10)
    return p
  }

  #entry(msg: Buffer, q: Query, tcp: boolean, entry: NameEntry, client: string): Buffer | Promise<Buffer | null> {
    const set = entry.sets.get(q.qtype)
    if (!set) {
      if (entry.cname !== null)
        return this.delegate !== null ? this.delegate(msg, tcp, client) : this.#chase(msg, q, tcp, entry, client)
      if (entry.reverse) {
        const pos = this.#start(msg, q, true, 0)
        this.#counts(0, 0, 0, q)
        this.#count(q.qtype, 0)
        return this.#finish(q.edns ? writeOpt(this.#out, pos, UDP_PAYLOAD_CAP, q.dnssecOk, 0) : pos, tcp)
      }
      return this.#negative(msg, q, tcp, RCODE.NOERROR)
    }
    const out = this.#out
    const limit = Resolver.limit(q, tcp) - (q.edns ? 11 : 0)
    let pos = this.#start(msg, q, true, 0)
    const base = pos
    let an = set.ends.length
    let ar = 0
    if (pos + set.answer.length <= limit) {
      set.answer.copy(out, pos)
      pos += set.answer.length
      if (set.arCount > 0 && pos + set.additional.length <= limit) {
        set.additional.copy(out, pos)
        pos += set.additional.length
        ar = set.arCount
      }
    } else {
      // As many whole RRs as fit, TC=1 (musl before 1.2.4 keeps what it gets; others retry over TCP).
      an = 0
      while (an < set.ends.length && base + set.ends[an]! <= limit) an++
      const cut = an > 0 ? set.ends[an - 1]! : 0
      set.answer.copy(out, pos, 0, cut)
      pos += cut
      out[2] = out[2]! | 0x02
    }
    if (set.shuffle > 0 && an > 1) {
      const size = set.shuffle
      const offsets: number[] = []
      for (let i = 0; i < an; i++) offsets.push(base + i * (12 + size) + 12)
      shuffleFixed(out, offsets, size)
    }
    this.#counts(an, 0, ar, q)
    if (q.edns) pos = writeOpt(out, pos, UDP_PAYLOAD_CAP, q.dnssecOk, 0)
    this.#count(q.qtype, 0)
    return this.#finish(pos, tcp)
  }

  /** RFC 6761: localhost and names below it are loopback, never forwarded. */
  #localhost(msg: Buffer, q: Query, tcp: boolean): Buffer {
    const out = this.#out
    let pos = this.#start(msg, q, true, 0)
    let an = 0
    if (q.qtype === TYPE.A || q.qtype === TYPE.AAAA || q.qtype === TYPE.ANY) {
      for (const t of q.qtype === TYPE.ANY ? [TYPE.A, TYPE.AAAA] : [q.qtype]) {
        out.writeUInt16BE(0xc00c, pos)
        out.writeUInt16BE(t, pos + 2)
        out.writeUInt16BE(1, pos + 4)
        out.writeUInt32BE(this.#zone.options.ttl, pos + 6)
        if (t === TYPE.A) {
          out.writeUInt16BE(4, pos + 10)
          out.set([127, 0, 0, 1], pos + 12)
          pos += 16
        } else {
          out.writeUInt16BE(16, pos + 10)
          out.fill(0, pos + 12, pos + 27)
          out[pos + 27] = 1
          pos += 28
        }
        an++
      }
    }
    this.#counts(an, 0, 0, q)
    if (q.edns) pos = writeOpt(out, pos, UDP_PAYLOAD_CAP, q.dnssecOk, 0)
    this.#count(q.qtype, 0)
    return this.#finish(pos, tcp)
  }

  #pending(msg: Buffer, q: Query, tcp: boolean): Pending {
    return {
      id: q.id,
      rd: q.rd,
      cd: q.cd,
      edns: q.edns,
      dnssecOk: q.dnssecOk,
      question: Buffer.from(msg.subarray(12, 12 + q.qnameLen + 4)),
      limit: Resolver.limit(q, tcp),
      tcp,
      qtype: q.qtype,
      key: q.key,
    }
  }

  #servfail(p: Pending): Buffer {
    const out = this.#out
    out.writeUInt16BE(p.id, 0)
    out[2] = 0x80 | (p.rd ? 1 : 0)
    out[3] = 0x80 | (p.cd ? 0x10 : 0) | RCODE.SERVFAIL
    out.writeUInt16BE(1, 4)
    out.writeUInt32BE(0, 6)
    out.writeUInt16BE(p.edns ? 1 : 0, 10)
    p.question.copy(out, 12)
    let pos = 12 + p.question.length
    if (p.edns) pos = writeOpt(out, pos, UDP_PAYLOAD_CAP, p.dnssecOk, 0)
    this.#count(p.qtype, RCODE.SERVFAIL)
    return this.#finish(pos, p.tcp)
  }

  #forward(msg: Buffer, q: Query, tcp: boolean, client: string): Buffer | Promise<Buffer | null> {
    if (this.delegate !== null) {
      // A worker refuses at once rather than hand a query over only to have it refused.
      if (!this.#recursionAllowed(client)) return this.#refuseRecursion(msg, q, tcp)
      return this.delegate(msg, tcp, client)
    }
    const f = this.forwarder
    // The loop probe coming back: refuse that upstream and do not forward it again. Checked before the ACL so a
    // looping upstream outside the allowed networks is still recognised.
    if (!f || f.isLoopProbe(q.key)) return this.#servfail(this.#pending(msg, q, tcp))
    if (!this.#recursionAllowed(client)) return this.#refuseRecursion(msg, q, tcp)
    const p = this.#pending(msg, q, tcp)
    const cacheKey = p.dnssecOk
      ? `${p.key}${msg.toString('latin1', 12 + q.qnameLen, 16 + q.qnameLen)}1`
      : `${p.key}${msg.toString('latin1', 12 + q.qnameLen, 16 + q.qnameLen)}0`
    const r = f.resolve(p.question, cacheKey, p.dnssecOk, p.cd)
    if (!(r instanceof Promise)) return this.#relay(r.buf, r.scan, r.storedAt, p)
    return r.then((entry) => (entry ? this.#relay(entry.buf, entry.scan, entry.storedAt, p) : this.#servfail(p)))
  }

  #relay(buf: Buffer, scan: NonNullable<ReturnType<typeof scanMessage>>, storedAt: number, p: Pending): Buffer {
    // storedAt is monotonic (dns/cache.ts): never ahead of now, so no TTL is raised.
    const elapsed = Math.floor((performance.now() - storedAt) / 1000)
    const len = relay(buf, scan, p, elapsed, this.#out, true)
    this.#count(p.qtype, scan.rcode)
    return this.#finish(len, p.tcp)
  }

  /**
   * ExternalName (specs/dns.md §4.7): the CNAME first, then the target resolved with the same type, in-zone targets
   * from the zone and others through the forwarder; up to 10 steps with loop detection; RCODE from the end of the
   * chain; SERVFAIL when the upstream fails. For a client outside the recursion ACL the chase stops at the first
   * target outside the zone, and the answer ends with the CNAME for the client to follow.
   */
  async #chase(msg: Buffer, q: Query, tcp: boolean, entry: NameEntry, client: string): Promise<Buffer | null> {
    const recurse = this.#recursionAllowed(client)
    const p = this.#pending(msg, q, tcp)
    const typeClass = msg.subarray(12 + q.qnameLen, 16 + q.qnameLen)
    const w = new MessageWriter(Buffer.alloc(65535))
    w.pos = 12 + p.question.length
    p.question.copy(w.buf, 12)
    const ends: number[] = []
    let target = entry.cname!
    // The CNAME: owner 0xC00C, target written through the writer so the chased records compress against it.
    w.buf.writeUInt16BE(0xc00c, w.pos)
    w.buf.writeUInt16BE(TYPE.CNAME, w.pos + 2)
    w.buf.writeUInt16BE(1, w.pos + 4)
    w.buf.writeUInt32BE(this.#zone.options.ttl, w.pos + 6)
    const rdlenAt = w.pos + 10
    w.pos += 12
    w.name(target.split('.'))
    w.buf.writeUInt16BE(w.pos - rdlenAt - 2, rdlenAt)
    ends.push(w.pos)
    const seen = new Set<string>([q.key])
    let rcode: number = RCODE.NOERROR
    let authority: { buf: Buffer; start: number } | null = null
    const zone = this.#zone
    for (let step = 0; ; step++) {
      const tkey = nameKey(target)
      if (step >= MAX_CHAIN || seen.has(tkey)) {
        rcode = RCODE.SERVFAIL
        break
      }
      seen.add(tkey)
      // Resolve the target with a synthetic query through the same code (in zone, localhost or forwarded).
      const sub = Buffer.concat([
        Buffer.from([0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
        Buffer.from(tkey, 'latin1'),
        typeClass,
      ])
      const inZone = tkey.endsWith(zone.zoneKey) || tkey.endsWith(LOCALHOST)
      let reply: Buffer | null
      if (inZone) {
        const tq = new Query()
        parseQuery(sub, sub.length, tq)
        const r = this.resolve(sub, tq, true, client)
        reply = r instanceof Promise ? await r : r
        if (reply) reply = reply.subarray(2)
      } else {
        const f = this.forwarder
        if (!f || !recurse) break
        const qb = sub.subarray(12)
        const key = `${lowerKey(qb, 0, qb.length - 4, true)}${qb.toString('latin1', qb.length - 4)}${p.dnssecOk ? 1 : 0}`
        const r = f.resolve(Buffer.from(qb), key, p.dnssecOk, p.cd)
        const e = r instanceof Promise ? await r : r
        reply = e ? e.buf : null
      }
      const scan = reply ? scanMessage(reply) : null
      if (!reply || !scan) {
        rcode = RCODE.SERVFAIL
        break
      }
      rcode = scan.rcode
      let next: string | null = null
      for (let i = 0; i < scan.anCount; i++) {
        if (!w.copyRR(reply, scan.rrStart[i]!, -1, 86400)) break
        ends.push(w.pos)
        const t = scan.rrType[i]
        if (t === TYPE.CNAME && p.qtype !== TYPE.CNAME) {
          const ne = readName(reply, scan.rrStart[i]!)
          const rn = ne ? readName(reply, ne.end + 10) : null
          if (rn) next = rn.labels.join('.')
        }
      }
      const hasFinal = scan.rrType.slice(0, scan.anCount).some((t) => t === p.qtype)
      if (scan.anCount === 0 || rcode !== 0)
        authority = scan.nsCount > 0 ? { buf: reply, start: scan.rrStart[scan.anCount]! } : null
      if (next && !hasFinal && rcode === 0) {
        target = next
        continue
      }
      break
    }
    if (rcode === RCODE.SERVFAIL) return this.#servfail(p)
    let ns = 0
    const limit = p.limit - (p.edns ? 11 : 0)
    if (authority && w.copyRR(authority.buf, authority.start, -1, 86400)) ns = 1
    let an = ends.length
    let tc = false
    if (w.pos > limit) {
      ns = 0
      while (an > 0 && ends[an - 1]! > limit) an--
      w.pos = an > 0 ? ends[an - 1]! : 12 + p.question.length
      tc = true
    }
    const out = w.buf
    out.writeUInt16BE(p.id, 0)
    out[2] = 0x80 | 0x04 | (tc ? 0x02 : 0) | (p.rd ? 1 : 0)
    out[3] = 0x80 | (p.cd ? 0x10 : 0) | rcode
    out.writeUInt16BE(1, 4)
    out.writeUInt16BE(an, 6)
    out.writeUInt16BE(ns, 8)
    out.writeUInt16BE(p.edns ? 1 : 0, 10)
    let pos = w.pos
    if (p.edns) pos = writeOpt(out, pos, UDP_PAYLOAD_CAP, p.dnssecOk, 0)
    this.#count(p.qtype, rcode)
    if (p.tcp) {
      const b = Buffer.allocUnsafe(pos + 2)
      b.writeUInt16BE(pos, 0)
      out.copy(b, 2, 0, pos)
      return b
    }
    return Buffer.from(out.subarray(0, pos))
  }
}
