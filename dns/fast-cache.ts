// The UDP fast path for forwarded names answered from the cache (issue 17): a cached upstream reply is kept as the
// client's answer already written, and a hit is answered like an in-zone hit (dns/fast.ts) — no decoding, no key
// string, no encoding. Per entry:
//
//   * the key: the lowercase question (name, type, class) and the DO bit, hashed with FNV-1a over the bytes into an
//     open-addressing table; a query is hashed and compared byte by byte as it is walked;
//   * two variants of the reply relayed once at fill time by dns/message.ts `relay` (so the bytes are those the
//     general path would send): without EDNS (512-byte limit) and with meshlet's OPT (1,232); a variant that had to be
//     cut is null and such queries take the general path, which truncates;
//   * the offsets of every TTL field with its original value, counted down from the store time: the TTLs are
//     rewritten only when the elapsed whole second changes, so most hits write none;
//   * the A/AAAA RDATA offsets to shuffle (records under one owner pointer, as the relay shuffles them).
//
// A hit patches the ID, RD and CD, and the question's name bytes when the query (or the previous one) had upper case
// (the case is echoed, 0x20). Negative answers (NXDOMAIN, NODATA with the SOA, RFC 2308) are the same kind of entry.
//
//   table (Int32Array, 2^k)      entries
//   ┌───┬───┬───┬───┬───┐       ┌────────────────────────────────────────────────────────┐
//   │ 0 │ 3 │-1 │ 1 │ 0 │ ───▶  │ key │ plain │ edns │ ttlAt[] ttl[] │ storedAt expires │
//   └───┴───┴───┴───┴───┘       └────────────────────────────────────────────────────────┘
//   0 free, -1 removed (probed past), n > 0: entry n - 1
//
// The table mirrors the forwarder's ReplyCache (dns/cache.ts), which stays the owner: what it stores is put here,
// what it evicts or finds expired is deleted here. With --dns-workers every worker holds such a mirror, filled by
// the main thread's broadcast of each store (dns/workers.ts). Hits here are reported back for the ReplyCache's LRU
// order (`takeTouched`: each entry once per report): on the main thread just before it evicts, from workers once a
// second. Times are performance.now() values of the thread that holds the mirror (monotonic: a wall clock stepped
// back never raises a TTL).

import { FNV_OFFSET, FNV_PRIME, TYPE, UDP_PAYLOAD_CAP, nameKey, shuffleFixed, skipName, type UdpQuery } from './wire.ts'
import { relay, scanMessage, type ClientView, type Scan } from './message.ts'

const TOMBSTONE = -1
const REVERSE4 = nameKey('in-addr.arpa')
const REVERSE6 = nameKey('ip6.arpa')

/** One variant (with or without OPT) of a cached answer, patched in place per hit. */
class Variant {
  readonly buf: Buffer
  /** Elapsed whole seconds the TTLs in `buf` were written for. */
  elapsed = 0
  /** The name bytes hold the case of an earlier query. */
  dirty = false

  constructor(buf: Buffer) {
    this.buf = buf
  }
}

class Entry {
  /** The forwarder's cache key (string), reported back on a hit. */
  readonly name: string
  /** Lowercase question (name + type + class) followed by the DO bit (0 or 1). */
  readonly key: Buffer
  readonly plain: Variant | null
  readonly edns: Variant | null
  readonly ttlAt: Int32Array
  readonly ttl: Float64Array
  /** RDATA offsets of A (size 4) or AAAA (size 16) records to shuffle; null when none. */
  readonly shuffle: Int32Array | null
  readonly shuffleSize: number
  readonly storedAt: number
  readonly expires: number
  /** Index into the (qtype, rcode) counters. */
  readonly count: number
  /** The report (FastCache epoch) this entry was last put in `touched` for. */
  seen = 0

  constructor(
    name: string,
    key: Buffer,
    plain: Variant | null,
    edns: Variant | null,
    ttlAt: Int32Array,
    ttl: Float64Array,
    shuffle: Int32Array | null,
    shuffleSize: number,
    storedAt: number,
    expires: number,
    count: number,
  ) {
    this.name = name
    this.key = key
    this.plain = plain
    this.edns = edns
    this.ttlAt = ttlAt
    this.ttl = ttl
    this.shuffle = shuffle
    this.shuffleSize = shuffleSize
    this.storedAt = storedAt
    this.expires = expires
    this.count = count
  }
}

function hashKey(key: Buffer): number {
  let h = FNV_OFFSET
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key[i]!, FNV_PRIME)
  return h
}

/** The forwarder's cache key (lowercase wire name + type + class as latin1, then '0' or '1' for DO) as bytes. */
export function keyBytes(key: string): Buffer {
  const b = Buffer.from(key, 'latin1')
  b[b.length - 1] = key.endsWith('1') ? 1 : 0
  return b
}

/** Where variants are relayed before being copied out at their size (one per thread: fills are synchronous). */
const scratch = Buffer.alloc(65535 + 2)

/** The client's answer relayed from `src`; null when it had to be cut (more than `limit`). */
function variant(src: Buffer, scan: Scan, question: Buffer, edns: boolean, dnssecOk: boolean, limit: number) {
  const client: ClientView = { id: 0, rd: false, cd: false, edns, dnssecOk, question, limit }
  const out = scratch
  const len = relay(src, scan, client, 0, out, false)
  // Every RR kept, not truncated: otherwise this client size goes to the general path.
  if ((out[2]! & 0x02) !== 0) return null
  const kept = out.readUInt16BE(6) + out.readUInt16BE(8) + out.readUInt16BE(10) - (edns ? 1 : 0)
  if (kept !== scan.rrStart.length) return null
  return new Variant(Buffer.from(out.subarray(0, len)))
}

export class FastCache {
  #table = new Int32Array(64)
  #mask = 63
  #entries: (Entry | null)[] = []
  #free: number[] = []
  /** Keys of entries hit since the last `takeTouched`, each once. */
  #touched: string[] = []
  #epoch = 1
  /** Slots holding an entry or a tombstone. */
  #used = 0
  #live = 0
  readonly #counts: Float64Array
  readonly #countIndex: (qtype: number, rcode: number) => number
  /** [0]: hits answered here (a SharedArrayBuffer in a worker, read by the main thread's metrics). */
  readonly hits: Float64Array

  constructor(counts: Float64Array, countIndex: (qtype: number, rcode: number) => number, hits?: Float64Array) {
    this.#counts = counts
    this.#countIndex = countIndex
    this.hits = hits ?? new Float64Array(1)
  }

  get size(): number {
    return this.#live
  }

  /**
   * Stores the reply the forwarder cached under `key` (its string key), stored at `storedAt` and gone at `expires`
   * (performance.now() values of this thread). Replaces an entry with that key; a reply that cannot be scanned is not stored.
   */
  put(key: string, reply: Buffer, storedAt: number, expires: number): void {
    this.delete(key)
    // Reverse names may become meshlet's own (a new ClusterIP) while cached, and only the general path checks the
    // zone before the cache for every query type: they are not mirrored here.
    const name = key.slice(0, -5)
    if (name.endsWith(REVERSE4) || name.endsWith(REVERSE6)) return
    const kb = keyBytes(key)
    const scan = scanMessage(reply)
    if (scan === null || kb.length < 5) return
    const question = kb.subarray(0, kb.length - 1)
    if (reply.length < 12 + question.length) return
    const dnssecOk = kb[kb.length - 1] === 1
    const plain = variant(reply, scan, question, false, false, 512)
    const edns = variant(reply, scan, question, true, dnssecOk, UDP_PAYLOAD_CAP)
    if (plain === null && edns === null) return
    const n = scan.rrStart.length
    const ttlAt = new Int32Array(n)
    const ttl = new Float64Array(n)
    for (let i = 0; i < n; i++) {
      ttlAt[i] = skipName(reply, scan.rrStart[i]!, scan.rrEnd[i]!) + 4
      ttl[i] = scan.ttl[i]!
    }
    // As the relay's shuffle: A (then AAAA) answers under the owner pointer of the first of them.
    let shuffle: Int32Array | null = null
    let shuffleSize = 0
    for (const type of [TYPE.A, TYPE.AAAA]) {
      const at: number[] = []
      let owner = -1
      for (let i = 0; i < scan.anCount; i++) {
        const s = scan.rrStart[i]!
        if (scan.rrType[i] !== type || (reply[s]! & 0xc0) !== 0xc0) continue
        const ptr = reply.readUInt16BE(s)
        if (owner === -1) owner = ptr
        if (ptr === owner) at.push(s + 12)
      }
      if (at.length > 1) {
        shuffle = Int32Array.from(at)
        shuffleSize = type === TYPE.A ? 4 : 16
        break
      }
    }
    const qtype = question.readUInt16BE(question.length - 4)
    const e = new Entry(
      key,
      kb,
      plain,
      edns,
      ttlAt,
      ttl,
      shuffle,
      shuffleSize,
      storedAt,
      expires,
      this.#countIndex(qtype, scan.rcode),
    )
    if ((this.#used + 1) * 2 > this.#table.length) this.#rehash(this.#table.length * 2)
    const idx = this.#free.pop() ?? this.#entries.length
    if (idx === this.#entries.length) this.#entries.push(e)
    else this.#entries[idx] = e
    let slot = hashKey(kb) & this.#mask
    while (this.#table[slot]! > 0) slot = (slot + 1) & this.#mask
    if (this.#table[slot] === 0) this.#used++
    this.#table[slot] = idx + 1
    this.#live++
  }

  /** Removes the entry stored under the forwarder's `key`, if any. */
  delete(key: string): void {
    const kb = keyBytes(key)
    let slot = hashKey(kb) & this.#mask
    for (;;) {
      const v = this.#table[slot]!
      if (v === 0) return
      if (v > 0 && this.#entries[v - 1]!.key.equals(kb)) {
        this.#table[slot] = TOMBSTONE
        this.#entries[v - 1] = null
        this.#free.push(v - 1)
        this.#live--
        return
      }
      slot = (slot + 1) & this.#mask
    }
  }

  clear(): void {
    this.#table = new Int32Array(64)
    this.#mask = 63
    this.#entries = []
    this.#free = []
    this.#used = 0
    this.#live = 0
  }

  #rehash(atLeast: number): void {
    let size = 64
    while (size < Math.max(atLeast, this.#live * 4)) size <<= 1
    const live = this.#entries.filter((e): e is Entry => e !== null)
    this.#table = new Int32Array(size)
    this.#mask = size - 1
    this.#entries = live
    this.#free = []
    this.#used = live.length
    for (let i = 0; i < live.length; i++) {
      let slot = hashKey(live[i]!.key) & this.#mask
      while (this.#table[slot] !== 0) slot = (slot + 1) & this.#mask
      this.#table[slot] = i + 1
    }
  }

  /**
   * The answer to a UDP query from the cache, or null when the general path must answer it (not cached, expired,
   * a variant that would be cut, an unusual query). `busy`: the socket has a queued send that may reference a
   * variant, so it is copied before patching. `q`: the query as `scanUdpQuery` found it.
   */
  answer(msg: Buffer, q: UdpQuery, busy: boolean): Buffer | null {
    if (this.#live === 0) return null
    const nameLen = q.nameLen
    const upper = q.upper
    const limit = q.limit
    const edns = q.edns
    const dnssecOk = q.dnssecOk ? 1 : 0
    const b2 = msg[2]!
    // The key hash goes on from the name's (root byte included): type, class IN, DO.
    let h = q.hash
    h = Math.imul(h ^ (q.qtype >>> 8), FNV_PRIME)
    h = Math.imul(h ^ (q.qtype & 0xff), FNV_PRIME)
    h = Math.imul(h, FNV_PRIME)
    h = Math.imul(h ^ 1, FNV_PRIME)
    h = Math.imul(h ^ dnssecOk, FNV_PRIME)

    const qlen = nameLen + 4
    const table = this.#table
    const mask = this.#mask
    let slot = h & mask
    let e: Entry
    for (;;) {
      const v = table[slot]!
      if (v === 0) return null
      if (v > 0) {
        const c = this.#entries[v - 1]!
        const key = c.key
        if (key.length === qlen + 1 && key[qlen] === dnssecOk) {
          let i = 0
          for (; i < qlen; i++) {
            let x = msg[12 + i]!
            if (x >= 0x41 && x <= 0x5a) x += 32
            if (x !== key[i]) break
          }
          if (i === qlen) {
            e = c
            break
          }
        }
      }
      slot = (slot + 1) & mask
    }
    const now = performance.now()
    if (now >= e.expires) return null
    const v = edns ? e.edns : e.plain
    if (v === null || v.buf.length > limit) return null
    // storedAt may lie a little ahead of now for an entry posted from the main thread (its age is converted).
    const elapsed = now > e.storedAt ? ((now - e.storedAt) / 1000) | 0 : 0
    let out = v.buf
    if (busy) out = Buffer.from(out)
    if (elapsed !== v.elapsed) {
      const at = e.ttlAt
      const ttl = e.ttl
      for (let i = 0; i < at.length; i++) {
        const t = ttl[i]! > elapsed ? ttl[i]! - elapsed : 0
        const o = at[i]!
        out[o] = t >>> 24
        out[o + 1] = (t >>> 16) & 0xff
        out[o + 2] = (t >>> 8) & 0xff
        out[o + 3] = t & 0xff
      }
      if (!busy) v.elapsed = elapsed
    }
    out[0] = msg[0]!
    out[1] = msg[1]!
    out[2] = (out[2]! & 0xfe) | (b2 & 1)
    out[3] = (out[3]! & 0xef) | (msg[3]! & 0x10)
    if (upper || v.dirty) {
      msg.copy(out, 12, 12, 12 + nameLen)
      if (!busy) v.dirty = upper
    }
    if (e.shuffle !== null) shuffleFixed(out, e.shuffle, e.shuffleSize)
    if (e.seen !== this.#epoch) {
      e.seen = this.#epoch
      this.#touched.push(e.name)
    }
    this.#counts[e.count]!++
    this.hits[0]!++
    return out
  }

  /** The keys hit since the last call (for ReplyCache.touch), in no particular order; starts a new report. */
  takeTouched(): string[] {
    const keys = this.#touched
    if (keys.length === 0) return keys
    this.#touched = []
    this.#epoch++
    return keys
  }
}
