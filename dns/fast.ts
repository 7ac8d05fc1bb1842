// The UDP fast path for in-zone names: no decoding, no string, no allocation for a hit. Built once from the first zone
// (dns/zone.ts), then updated in place for the names a Snapshot changed (`update`), as
//
//   * an open-addressing hash table over the lowercase wire names (FNV-1a over the bytes, compared byte by byte in
//     an arena), so the lookup needs neither a key string nor a Map;
//   * per (name, qtype) a whole reply message, built on the first query for it, header + lowercase question + answer + additional, with the counts
//     already set: a hit patches ID, RD and CD (and the name bytes when the query had upper case), shuffles A/AAAA
//     RDATA in place, and the template itself is what `socket.send` gets. The caller says when the socket still has
//     a queued send (which may reference a template): then the template is copied first.
//   * in-zone NXDOMAIN and NODATA: the question echoed from the query and a precomputed SOA behind it (one Buffer of
//     the reply's size, the only allocation).
//
// Anything else (EDNS version ≠ 0, options the fast check does not take, truncation, ExternalName chases, reverse
// NODATA, names outside the zone, class ANY, meta types) returns null and the general path (dns/answer.ts) answers it
// with the same result.

import { FNV_OFFSET, FNV_PRIME, RCODE, TYPE, UDP_PAYLOAD_CAP, UdpQuery, scanUdpQuery, shuffleFixed } from './wire.ts'
import type { NameEntry, Zone } from './zone.ts'

/** qtype → slot of a per-name template; -1: not answered here. */
const SLOT = new Int8Array(256).fill(-1)
const SLOT_TYPES = [TYPE.A, TYPE.AAAA, TYPE.CNAME, TYPE.TXT, TYPE.SRV, TYPE.PTR, TYPE.SOA, TYPE.NS, TYPE.ANY]
SLOT_TYPES.forEach((t, i) => (SLOT[t] = i))
const SLOTS = SLOT_TYPES.length
/**
 * Types answered here when there is no template: NODATA at an existing name, NXDOMAIN at a missing one. Others
 * (meta types, AXFR/IXFR, rare types) go to the general path.
 */
const NODATA_OK = new Uint8Array(256)
for (const t of [...SLOT_TYPES, TYPE.MX, 64, 65]) NODATA_OK[t] = 1

/** One precomputed reply. Mutated in place per query (ID, flags, name case, shuffle). */
class Template {
  readonly buf: Buffer
  /** The same with an OPT record appended (built on the first EDNS query). */
  edns: Buffer | null = null
  /** Offsets of the A/AAAA RDATA to shuffle, and their size; null when not shuffled. */
  readonly shuffle: Int32Array | null
  readonly size: number
  /** Index into the counters (qtype, NOERROR). */
  readonly count: number
  /** The name bytes hold the case of an earlier query. */
  dirty = false

  constructor(buf: Buffer, shuffle: Int32Array | null, size: number, count: number) {
    this.buf = buf
    this.shuffle = shuffle
    this.size = size
    this.count = count
  }
}

export function hashName(buf: Uint8Array, start: number, end: number): number {
  let h = FNV_OFFSET
  for (let i = start; i < end; i++) {
    let c = buf[i]!
    if (c >= 0x41 && c <= 0x5a) c += 32
    h = Math.imul(h ^ c, FNV_PRIME)
  }
  return h
}

/** A table slot whose name was removed: lookups probe past it. */
const TOMBSTONE = -1

export class FastPath {
  #arena: Buffer
  #arenaUsed = 0
  /** Bytes of removed names still in the arena; compacted away when they are half of it. */
  #arenaWaste = 0
  #nameStart: Int32Array
  #nameLen: Int32Array
  #table: Int32Array
  #mask: number
  /** Slots holding a name or a tombstone (the table grows when they pass half of it). */
  #used = 0
  #live = 0
  /** Per name index: its entry (null: free index). */
  #entries: (NameEntry | null)[]
  /**
   * Per name, per slot: the template, null when the entry has no RRset for the type, undefined until first asked. The
   * per-name array is made on the first query for the name (most names of a big zone are never asked).
   */
  #templates: ((Template | null | undefined)[] | undefined)[]
  /** Per name: the NODATA variant is allowed (not an ExternalName, not reverse). */
  #nodata: Uint8Array
  #free: number[] = []
  #zoneKey: Buffer
  /** SOA RR after its 2-byte owner pointer; two pointers are patched per reply. */
  #soaTail: Buffer
  readonly #counts: Float64Array
  readonly #countIndex: (qtype: number, rcode: number) => number
  /** Scratch: the current query when called through `answer`. */
  readonly #query = new UdpQuery()

  constructor(zone: Zone, counts: Float64Array, countIndex: (qtype: number, rcode: number) => number) {
    this.#counts = counts
    this.#countIndex = countIndex
    const n = zone.names.size
    let size = 16
    while (size < n * 2) size <<= 1
    this.#table = new Int32Array(size)
    this.#mask = size - 1
    this.#nameStart = new Int32Array(Math.max(16, n))
    this.#nameLen = new Int32Array(Math.max(16, n))
    this.#nodata = new Uint8Array(Math.max(16, n))
    this.#entries = []
    this.#templates = []
    let total = 0
    for (const key of zone.names.keys()) total += key.length
    this.#arena = Buffer.alloc(Math.max(256, total))
    for (const [key, entry] of zone.names) this.#insert(key, entry)
    this.#zoneKey = Buffer.from(zone.zoneKey, 'latin1')
    this.#soaTail = soaTail(zone)
  }

  /**
   * Brings the table to `zone` for the names whose entries changed (wire keys, as ZoneIndex.apply reports them):
   * each is replaced, added or removed; nothing else is touched. Templates are rebuilt lazily on the next hit.
   */
  update(zone: Zone, changed: Iterable<string>): void {
    this.#soaTail = soaTail(zone)
    for (const key of changed) {
      const entry = zone.names.get(key)
      const idx = this.#find(key)
      if (idx >= 0) {
        if (entry) this.#set(idx, entry)
        else this.#delete(idx, key)
      } else if (entry) this.#insert(key, entry)
    }
    if (this.#arenaWaste > this.#arena.length / 2 && this.#arenaWaste > 65536) this.#rehash(this.#table.length)
  }

  #find(key: string): number {
    const wire = Buffer.from(key, 'latin1')
    let slot = hashName(wire, 0, wire.length) & this.#mask
    for (;;) {
      const e = this.#table[slot]!
      if (e === 0) return -1
      if (e > 0) {
        const idx = e - 1
        if (this.#nameLen[idx] === wire.length) {
          const start = this.#nameStart[idx]!
          if (this.#arena.compare(wire, 0, wire.length, start, start + wire.length) === 0) return idx
        }
      }
      slot = (slot + 1) & this.#mask
    }
  }

  #set(idx: number, entry: NameEntry): void {
    this.#entries[idx] = entry
    this.#nodata[idx] = entry.cname === null && !entry.reverse ? 1 : 0
    this.#templates[idx] = undefined
  }

  #insert(key: string, entry: NameEntry): void {
    if ((this.#used + 1) * 2 > this.#table.length) this.#rehash(this.#table.length * 2)
    const idx = this.#free.pop() ?? this.#entries.length
    if (idx >= this.#nameStart.length) this.#growIndex(idx + 1)
    const len = key.length
    if (this.#arenaUsed + len > this.#arena.length) {
      const next = Buffer.alloc(Math.max(this.#arena.length * 2, this.#arenaUsed + len))
      this.#arena.copy(next, 0, 0, this.#arenaUsed)
      this.#arena = next
    }
    const start = this.#arenaUsed
    this.#arena.write(key, start, 'latin1')
    this.#arenaUsed += len
    this.#nameStart[idx] = start
    this.#nameLen[idx] = len
    if (idx === this.#entries.length) this.#entries.push(null)
    this.#set(idx, entry)
    let slot = hashName(this.#arena, start, start + len) & this.#mask
    while (this.#table[slot] !== 0) slot = (slot + 1) & this.#mask
    this.#table[slot] = idx + 1
    this.#used++
    this.#live++
  }

  #delete(idx: number, key: string): void {
    const wire = Buffer.from(key, 'latin1')
    let slot = hashName(wire, 0, wire.length) & this.#mask
    while (this.#table[slot] !== idx + 1) slot = (slot + 1) & this.#mask
    this.#table[slot] = TOMBSTONE
    this.#entries[idx] = null
    this.#templates[idx] = undefined
    this.#arenaWaste += this.#nameLen[idx]!
    this.#nameLen[idx] = -1
    this.#free.push(idx)
    this.#live--
  }

  #growIndex(min: number): void {
    let size = this.#nameStart.length * 2
    while (size < min) size *= 2
    const grow = <T extends Int32Array | Uint8Array>(a: T, b: T): T => (b.set(a), b)
    this.#nameStart = grow(this.#nameStart, new Int32Array(size))
    this.#nameLen = grow(this.#nameLen, new Int32Array(size))
    this.#nodata = grow(this.#nodata, new Uint8Array(size))
  }

  /** A new table (and a compacted arena) holding the live names: drops tombstones and removed names' bytes. */
  #rehash(atLeast: number): void {
    let size = 16
    while (size < Math.max(atLeast, this.#live * 4)) size <<= 1
    const live: [string, NameEntry][] = []
    for (let i = 0; i < this.#entries.length; i++) {
      const e = this.#entries[i]
      if (e)
        live.push([this.#arena.toString('latin1', this.#nameStart[i]!, this.#nameStart[i]! + this.#nameLen[i]!), e])
    }
    const templates = this.#templates
    const oldIdx: number[] = []
    for (let i = 0; i < this.#entries.length; i++) if (this.#entries[i]) oldIdx.push(i)
    this.#table = new Int32Array(size)
    this.#mask = size - 1
    this.#entries = []
    this.#templates = []
    this.#free = []
    this.#used = 0
    this.#live = 0
    this.#arenaUsed = 0
    this.#arenaWaste = 0
    this.#arena = Buffer.alloc(Math.max(256, this.#arena.length))
    for (let k = 0; k < live.length; k++) {
      const [key, entry] = live[k]!
      this.#insert(key, entry)
      // Templates already built stay valid: same entry, unchanged.
      this.#templates[k] = templates[oldIdx[k]!]
    }
  }

  /** The template of (name index, slot), built from the entry on first use. */
  #template(idx: number, s: number): Template | null {
    let row = this.#templates[idx]
    if (row === undefined) this.#templates[idx] = row = new Array<Template | null | undefined>(SLOTS)
    const have = row[s]
    if (have !== undefined) return have
    const entry = this.#entries[idx]!
    const qtype = SLOT_TYPES[s]!
    const set = entry.sets.get(qtype)
    let t: Template | null = null
    if (set) {
      const start = this.#nameStart[idx]!
      const wireLen = this.#nameLen[idx]!
      // Header: QR=1 AA=1, QDCOUNT 1, ANCOUNT, ARCOUNT; ID, RD and CD patched per query.
      const qlen = wireLen + 4
      const len = 12 + qlen + set.answer.length + set.additional.length
      const buf = Buffer.alloc(len)
      buf[2] = 0x84
      buf[3] = 0x80
      buf.writeUInt16BE(1, 4)
      buf.writeUInt16BE(set.ends.length, 6)
      buf.writeUInt16BE(set.arCount, 10)
      this.#arena.copy(buf, 12, start, start + wireLen)
      buf.writeUInt16BE(qtype, 12 + wireLen)
      buf.writeUInt16BE(1, 14 + wireLen)
      set.answer.copy(buf, 12 + qlen)
      set.additional.copy(buf, 12 + qlen + set.answer.length)
      let shuffle: Int32Array | null = null
      if (set.shuffle > 0 && set.ends.length > 1) {
        shuffle = new Int32Array(set.ends.length)
        for (let k = 0; k < set.ends.length; k++) shuffle[k] = 12 + qlen + k * (12 + set.shuffle) + 12
      }
      t = new Template(buf, shuffle, set.shuffle, this.#countIndex(qtype, 0))
    }
    row[s] = t
    return t
  }

  /**
   * The reply for a UDP query, or null when the general path must answer it. `busy`: the socket has a queued send,
   * so templates may be referenced by it and are copied instead of patched.
   */
  answer(msg: Buffer, busy: boolean): Buffer | null {
    return scanUdpQuery(msg, this.#query) ? this.answerScanned(msg, this.#query, busy) : null
  }

  /** `answer` for a query `scanUdpQuery` has already scanned into `q`. */
  answerScanned(msg: Buffer, q: UdpQuery, busy: boolean): Buffer | null {
    const qtype = q.qtype
    if (qtype > 255) return null
    const h = q.hash
    const upper = q.upper
    const nameLen = q.nameLen
    const edns = q.edns
    const limit = q.limit
    const dnssecOk = q.dnssecOk
    const labels = q.labels
    const n = q.labelCount
    const b2 = msg[2]!

    // Lookup.
    const table = this.#table
    const mask = this.#mask
    const arena = this.#arena
    let slot = h & mask
    let found = -1
    for (;;) {
      const e = table[slot]!
      if (e === 0) break
      const idx = e - 1
      if (e > 0 && this.#nameLen[idx] === nameLen) {
        let off = this.#nameStart[idx]!
        let i = 12
        const end = 12 + nameLen
        for (; i < end; i++, off++) {
          let c = msg[i]!
          if (c >= 0x41 && c <= 0x5a) c += 32
          if (c !== arena[off]) break
        }
        if (i === end) {
          found = idx
          break
        }
      }
      slot = (slot + 1) & mask
    }

    if (found < 0) {
      // In the zone (ends with the zone at a label boundary)? Then NXDOMAIN; else the general path.
      const zone = this.#zoneKey
      const at = 12 + nameLen - zone.length
      if (at < 12) return null
      let boundary = at === 12
      for (let i = 0; i < n && !boundary; i++) if (labels[i] === at) boundary = true
      if (!boundary || NODATA_OK[qtype] === 0) return null
      for (let i = 0; i < zone.length; i++) {
        let c = msg[at + i]!
        if (c >= 0x41 && c <= 0x5a) c += 32
        if (c !== zone[i]) return null
      }
      return this.#negative(msg, nameLen, qtype, RCODE.NXDOMAIN, edns, dnssecOk)
    }

    const s = SLOT[qtype]!
    const t = s >= 0 ? this.#template(found, s) : null
    if (t === null) {
      if (this.#nodata[found] === 0 || NODATA_OK[qtype] === 0) return null
      return this.#negative(msg, nameLen, qtype, RCODE.NOERROR, edns, dnssecOk)
    }
    let out = t.buf
    if (edns) {
      if (out.length + 11 > limit) return null
      out = t.edns ?? this.#withOpt(t)
    } else if (out.length > 512) return null
    if (busy) out = Buffer.from(out)
    out[0] = msg[0]!
    out[1] = msg[1]!
    out[2] = 0x84 | (b2 & 1)
    out[3] = 0x80 | (msg[3]! & 0x10)
    if (upper || t.dirty) {
      msg.copy(out, 12, 12, 12 + nameLen)
      t.dirty = upper
    }
    if (edns) out[out.length - 4] = dnssecOk ? 0x80 : 0
    if (t.shuffle !== null) shuffleFixed(out, t.shuffle, t.size)
    this.#counts[t.count]!++
    return out
  }

  #withOpt(t: Template): Buffer {
    const b = Buffer.alloc(t.buf.length + 11)
    t.buf.copy(b)
    b.writeUInt16BE(b.readUInt16BE(10) + 1, 10)
    const p = t.buf.length
    b.writeUInt16BE(TYPE.OPT, p + 1)
    b.writeUInt16BE(UDP_PAYLOAD_CAP, p + 3)
    t.edns = b
    return b
  }

  /** NXDOMAIN or NODATA: header, the question as received, the zone SOA (owner: the apex inside the question). */
  #negative(msg: Buffer, nameLen: number, qtype: number, rcode: number, edns: boolean, dnssecOk: boolean): Buffer {
    const tail = this.#soaTail
    const qend = 16 + nameLen
    const len = qend + 2 + tail.length + (edns ? 11 : 0)
    const out = Buffer.allocUnsafe(len)
    msg.copy(out, 0, 0, qend)
    out[2] = 0x84 | (msg[2]! & 1)
    out[3] = 0x80 | (msg[3]! & 0x10) | rcode
    out[6] = 0
    out[7] = 0
    out[8] = 0
    out[9] = 1
    out[10] = 0
    out[11] = edns ? 1 : 0
    const apex = 12 + nameLen - this.#zoneKey.length
    out[qend] = 0xc0 | (apex >> 8)
    out[qend + 1] = apex & 0xff
    tail.copy(out, qend + 2)
    // rname "hostmaster" + pointer to the zone part of mname ("\x02ns\x03dns" is 7 bytes into the RDATA).
    const rdStart = qend + 12
    const ptrAt = rdStart + this.#soaMnameLen() + 11
    const target = rdStart + 7
    out[ptrAt] = 0xc0 | (target >> 8)
    out[ptrAt + 1] = target & 0xff
    if (edns) {
      const o = len - 11
      out[o] = 0
      out[o + 1] = 0
      out[o + 2] = TYPE.OPT
      out[o + 3] = UDP_PAYLOAD_CAP >> 8
      out[o + 4] = UDP_PAYLOAD_CAP & 0xff
      out[o + 5] = 0
      out[o + 6] = 0
      out[o + 7] = dnssecOk ? 0x80 : 0
      out[o + 8] = 0
      out[o + 9] = 0
      out[o + 10] = 0
    }
    this.#counts[this.#countIndex(qtype, rcode)]!++
    return out
  }

  #soaMnameLen(): number {
    return this.#soaTail.length - 10 - 11 - 2 - 20
  }
}

/**
 * `<zone> ttl IN SOA ns.dns.<zone>. hostmaster.<zone>. serial 7200 1800 86400 ttl` without its owner pointer, as
 * dns/answer.ts writes it: mname in full, rname "hostmaster" + a pointer to the zone inside mname.
 */
function soaTail(zone: Zone): Buffer {
  const rdlen = zone.soaMname.length + 11 + 2 + 20
  const tail = Buffer.alloc(10 + rdlen)
  tail.writeUInt16BE(TYPE.SOA, 0)
  tail.writeUInt16BE(1, 2)
  tail.writeUInt32BE(zone.soaTtl, 4)
  tail.writeUInt16BE(rdlen, 8)
  zone.soaMname.copy(tail, 10)
  let p = 10 + zone.soaMname.length
  tail[p] = 10
  tail.write('hostmaster', p + 1, 'latin1')
  p += 13 // the pointer is patched per reply
  zone.soaNumbers.copy(tail, p)
  return tail
}
