// The zone index: every name meshlet owns (specs/dns.md §3, §4), kept up to date from each Snapshot by re-deriving only
// the Services, Pods and namespaces that changed (ZoneIndex), with each RRset compiled to wire form on its first
// query. A query then costs one Map lookup and a copy (dns/answer.ts).

import type { PodState, Snapshot, ServiceState } from '../model/snapshot.ts'
import { canonicalIp, ipFamily } from '../model/ip.ts'
import { SectionWriter, TYPE, ipBytes, nameToWire, reverseName } from './wire.ts'

/** Pod records (specs/dns.md §4.9): `verified` (meshlet default) or `disabled`. */
export type PodMode = 'verified' | 'disabled'

export interface ZoneOptions {
  /** The zone, without trailing dot: "cluster.local". */
  readonly zone: string
  /** TTL of every synthesized record except dns-version; 0-3600. */
  readonly ttl: number
  readonly pods: PodMode
  /** Glue for ns.dns.<zone>: the addresses meshlet's listener is reached on. */
  readonly serverAddresses: readonly string[]
}

/** One precomputed answer for one (name, qtype). Offsets inside assume the question is this entry's name. */
export interface RRSet {
  /** Answer RRs, owners are the pointer 0xC00C. */
  readonly answer: Buffer
  /** End offset of each answer RR in `answer` (truncation keeps whole RRs). */
  readonly ends: readonly number[]
  /** Additional RRs (SRV targets, NS glue); dropped first when the message does not fit. */
  readonly additional: Buffer
  readonly arCount: number
  /** RDATA size (4 or 16) when every RR is an A or AAAA of that size and the order is shuffled; 0 otherwise. */
  readonly shuffle: number
}

export interface NameEntry {
  /** Wire length of the name: the question length every RRSet was built for. */
  readonly wireLen: number
  readonly sets: ReadonlyMap<number, RRSet>
  /** ExternalName target (lowercase, no trailing dot): other types are chased (specs/dns.md §4.7). */
  readonly cname: string | null
  /** Under in-addr.arpa / ip6.arpa: NODATA there carries no zone SOA. */
  readonly reverse: boolean
}

export interface Zone {
  readonly options: ZoneOptions
  /** Wire form of the zone (lowercase latin1): in-zone test is "the key ends with this at a label boundary". */
  readonly zoneKey: string
  readonly zoneWireLen: number
  readonly names: ReadonlyMap<string, NameEntry>
  readonly serial: number
  /** SOA RDATA pieces for negative answers (dns/answer.ts writes them behind a pointer to the apex). */
  readonly soaMname: Buffer
  readonly soaNumbers: Buffer
  readonly soaTtl: number
  /** Number of names that hold records (ENTs excluded); for /status. */
  readonly recordNames: number
}

interface SrvSpec {
  readonly port: number
  readonly target: string
}

/** What one owner (a Service, a Pod, a namespace, the zone itself) puts at one name. */
interface Records {
  a: string[]
  aaaa: string[]
  cname: string | null
  txt: string | null
  srv: SrvSpec[]
  ptr: string[]
  apex: boolean
}

function emptyRecords(): Records {
  return { a: [], aaaa: [], cname: null, txt: null, srv: [], ptr: [], apex: false }
}

function sameList<T>(x: readonly T[], y: readonly T[], eq: (a: T, b: T) => boolean): boolean {
  if (x.length !== y.length) return false
  for (let i = 0; i < x.length; i++) if (!eq(x[i]!, y[i]!)) return false
  return true
}

function sameRecords(x: Records, y: Records): boolean {
  const is = (a: string, b: string) => a === b
  return (
    x.cname === y.cname &&
    x.txt === y.txt &&
    x.apex === y.apex &&
    sameList(x.a, y.a, is) &&
    sameList(x.aaaa, y.aaaa, is) &&
    sameList(x.ptr, y.ptr, is) &&
    sameList(x.srv, y.srv, (a, b) => a.port === b.port && a.target === b.target)
  )
}

/** Records at one name, merged over its owners in owner order (so the result does not depend on history). */
class NameData {
  readonly a = new Set<string>()
  readonly aaaa = new Set<string>()
  cname: string | null = null
  txt: string | null = null
  srv: SrvSpec[] = []
  readonly ptr = new Set<string>()
  apex = false
  reverse = false
  hasData(): boolean {
    return (
      this.a.size + this.aaaa.size + this.srv.length + this.ptr.size > 0 ||
      this.cname !== null ||
      this.txt !== null ||
      this.apex
    )
  }
  add(r: Records): void {
    for (const ip of r.a) this.a.add(ip)
    for (const ip of r.aaaa) this.aaaa.add(ip)
    if (r.cname !== null) this.cname = r.cname
    if (r.txt !== null) this.txt = r.txt
    for (const s of r.srv) this.srv.push(s)
    for (const p of r.ptr) this.ptr.add(p)
    if (r.apex) this.apex = true
  }
}

/** "10.244.1.5" → "10-244-1-5"; IPv6 ":" → "-", a trailing "-" padded to "-0" (specs/dns.md §4.6). */
export function dashedIp(ip: string): string {
  const canon = canonicalIp(ip) ?? ip
  if (ipFamily(canon) === 4) return canon.replaceAll('.', '-')
  const d = canon.replaceAll(':', '-')
  return d.endsWith('-') ? `${d}0` : d
}

function addAddress(r: Records, ip: string): void {
  const canon = canonicalIp(ip)
  if (!canon) return
  const list = ipFamily(canon) === 4 ? r.a : r.aaaa
  if (!list.includes(canon)) list.push(canon)
}

/** The wire key of a lowercase dotted name (what `nameKey` gives), or null when a label is empty or too long. */
function wireKey(name: string): string | null {
  let out = ''
  let start = 0
  for (;;) {
    let end = name.indexOf('.', start)
    if (end < 0) end = name.length
    const len = end - start
    if (len === 0 || len > 63) return null
    out += String.fromCharCode(len) + name.slice(start, end)
    if (end === name.length) break
    start = end + 1
  }
  return out + '\0'
}

/** One owner's records, by name. */
type Contribution = Map<string, Records>

/** A name in the index: the owners that put records there, and how many owner-names lie below it (ENTs). */
class Node {
  /** The owner when there is exactly one (most names): no Map per name. */
  #owner: string | null = null
  #records: Records | null = null
  /** Two owners or more. */
  #more: Map<string, Records> | null = null
  below = 0

  get ownerCount(): number {
    return this.#more !== null ? this.#more.size : this.#owner !== null ? 1 : 0
  }

  exists(): boolean {
    return this.ownerCount > 0 || this.below > 0
  }

  set(owner: string, r: Records): void {
    if (this.#more !== null) this.#more.set(owner, r)
    else if (this.#owner === null || this.#owner === owner) {
      this.#owner = owner
      this.#records = r
    } else {
      this.#more = new Map([
        [this.#owner, this.#records!],
        [owner, r],
      ])
      this.#owner = null
      this.#records = null
    }
  }

  delete(owner: string): void {
    if (this.#more !== null) {
      this.#more.delete(owner)
      if (this.#more.size === 1) {
        const [o, r] = this.#more.entries().next().value!
        this.#owner = o
        this.#records = r
        this.#more = null
      }
    } else if (this.#owner === owner) {
      this.#owner = null
      this.#records = null
    }
  }

  /** The single owner's records, or null when there are several (then `merge`). */
  get single(): Records | null {
    return this.#records
  }

  /** Records of every owner merged in owner order, so the result does not depend on the order of changes. */
  merge(reverse: boolean): NameData {
    const d = new NameData()
    d.reverse = reverse
    if (this.#records !== null) d.add(this.#records)
    else if (this.#more !== null) {
      const owners = [...this.#more.keys()].sort()
      for (const o of owners) d.add(this.#more.get(o)!)
    }
    return d
  }
}

const EMPTY: string[] = []
Object.freeze(EMPTY)

/** Empty lists of a finished contribution share one frozen array: most names hold one kind of record. */
function seal(own: Contribution): Contribution {
  for (const r of own.values()) {
    if (r.a.length === 0) r.a = EMPTY
    if (r.aaaa.length === 0) r.aaaa = EMPTY
    if (r.ptr.length === 0) r.ptr = EMPTY
    if (r.srv.length === 0) r.srv = EMPTY as unknown as SrvSpec[]
  }
  return own
}

function recordsHaveData(r: Records): boolean {
  return r.a.length + r.aaaa.length + r.srv.length + r.ptr.length > 0 || r.cname !== null || r.txt !== null || r.apex
}

const OWNER_ZONE = '0'
const ownerOfService = (key: string) => `s:${key}`
const ownerOfPod = (key: string) => `p:${key}`
const ownerOfNamespace = (ns: string) => `n:${ns}`

/**
 * The zone as a mutable index that a Snapshot updates in place (issue 14): every owner (the zone's own names, each
 * namespace, Service and Pod) contributes records at names; a new Snapshot re-derives only the owners whose state
 * changed (ServiceState and PodState objects are shared between Snapshots when unchanged, so a changed one is a new
 * object) and recompiles only the names those touch. Answers are compiled lazily on first use (`NameEntry.sets`).
 * `buildZone` is the same index applied once from empty: the full rebuild the incremental path must equal.
 */
export class ZoneIndex {
  readonly options: ZoneOptions
  readonly #zone: string
  readonly #nodes = new Map<string, Node>()
  readonly #owners = new Map<string, Contribution>()
  readonly #names = new Map<string, NameEntry>()
  readonly #dirty = new Set<string>()
  readonly #services = new Map<string, { state: ServiceState; mark: number }>()
  readonly #pods = new Map<string, { state: PodState; mark: number }>()
  #namespaces: readonly string[] = []
  #mark = 0
  #recordNames = 0
  #serial = 0
  #zoneObject: Zone | null = null

  constructor(options: ZoneOptions) {
    this.options = options
    this.#zone = options.zone.replace(/\.$/, '').toLowerCase()
    const zone = this.#zone
    const own = new Map<string, Records>()
    const at = (name: string) => {
      let r = own.get(name)
      if (!r) own.set(name, (r = emptyRecords()))
      return r
    }
    at(zone).apex = true
    at(`dns-version.${zone}`).txt = '1.1.0'
    const ns = at(`ns.dns.${zone}`)
    for (const ip of options.serverAddresses) addAddress(ns, ip)
    at(`svc.${zone}`)
    at(`pod.${zone}`)
    this.#setOwner(OWNER_ZONE, own)
  }

  /**
   * Brings the index to `snapshot` and returns the Zone to serve with the wire keys of the names whose entry was
   * added, replaced or removed. Cost: one identity check per Service and Pod, plus the work of what changed.
   */
  apply(snapshot: Snapshot, previousSerial: number): { zone: Zone; changed: string[] } {
    const mark = ++this.#mark
    const zone = this.#zone
    if (!sameList(snapshot.namespaces, this.#namespaces, (a, b) => a === b)) {
      const now = new Set(snapshot.namespaces)
      for (const ns of this.#namespaces) if (!now.has(ns)) this.#setOwner(ownerOfNamespace(ns), null)
      const before = new Set(this.#namespaces)
      for (const ns of snapshot.namespaces) {
        if (before.has(ns)) continue
        const own = new Map<string, Records>([[`${ns}.svc.${zone}`.toLowerCase(), emptyRecords()]])
        if (this.options.pods !== 'disabled') own.set(`${ns}.pod.${zone}`.toLowerCase(), emptyRecords())
        this.#setOwner(ownerOfNamespace(ns), own)
      }
      this.#namespaces = snapshot.namespaces
    }
    for (const s of snapshot.services) {
      const held = this.#services.get(s.key)
      if (held && held.state === s) {
        held.mark = mark
        continue
      }
      this.#services.set(s.key, { state: s, mark })
      this.#setOwner(ownerOfService(s.key), serviceRecords(s, zone, this.options.pods === 'verified'))
    }
    for (const [key, held] of this.#services) {
      if (held.mark === mark) continue
      this.#services.delete(key)
      this.#setOwner(ownerOfService(key), null)
    }
    if (this.options.pods === 'verified') {
      for (const p of snapshot.pods) {
        const held = this.#pods.get(p.key)
        if (held && held.state === p) {
          held.mark = mark
          continue
        }
        this.#pods.set(p.key, { state: p, mark })
        this.#setOwner(ownerOfPod(p.key), podRecords(p, zone))
      }
      for (const [key, held] of this.#pods) {
        if (held.mark === mark) continue
        this.#pods.delete(key)
        this.#setOwner(ownerOfPod(key), null)
      }
    }

    const serial = Math.max(previousSerial, Math.floor(snapshot.builtAt / 1000)) >>> 0 || 1
    if (serial !== this.#serial || this.#zoneObject === null) {
      this.#serial = serial
      this.#dirty.add(zone) // the apex SOA carries the serial
      this.#zoneObject = this.#makeZone()
    }
    const changed: string[] = []
    for (const name of this.#dirty) {
      const key = this.#compileName(name)
      if (key !== null) changed.push(key)
    }
    this.#dirty.clear()
    if (changed.length > 0) this.#zoneObject = { ...this.#zoneObject, recordNames: this.#recordNames }
    return { zone: this.#zoneObject, changed }
  }

  #makeZone(): Zone {
    const zone = this.#zone
    const ttl = this.options.ttl
    const soaNumbers = Buffer.alloc(20)
    soaNumbers.writeUInt32BE(this.#serial, 0)
    soaNumbers.writeUInt32BE(7200, 4)
    soaNumbers.writeUInt32BE(1800, 8)
    soaNumbers.writeUInt32BE(86400, 12)
    soaNumbers.writeUInt32BE(ttl, 16)
    const zw = nameToWire(zone)
    return {
      options: this.options,
      zoneKey: zw.toString('latin1'),
      zoneWireLen: zw.length,
      names: this.#names,
      serial: this.#serial,
      soaMname: nameToWire(`ns.dns.${zone}`),
      soaNumbers,
      soaTtl: Math.min(ttl, 300),
      recordNames: this.#recordNames,
    }
  }

  /** Replaces everything `owner` contributes (null: it is gone), marking the names whose answers change. */
  #setOwner(owner: string, next: Contribution | null): void {
    if (next !== null) seal(next)
    const prev = this.#owners.get(owner)
    if (prev) {
      for (const [name, r] of prev) {
        const n = next?.get(name)
        if (n === undefined) this.#remove(owner, name)
        else if (!sameRecords(r, n)) {
          this.#nodes.get(name)!.set(owner, n)
          this.#dirty.add(name)
        }
      }
    }
    if (next) {
      for (const [name, r] of next) if (!prev?.has(name)) this.#add(owner, name, r)
      this.#owners.set(owner, next)
    } else this.#owners.delete(owner)
  }

  #isReverse(name: string): boolean {
    return name.endsWith('.in-addr.arpa') || name.endsWith('.ip6.arpa')
  }

  #add(owner: string, name: string, r: Records): void {
    let node = this.#nodes.get(name)
    if (!node) this.#nodes.set(name, (node = new Node()))
    node.set(owner, r)
    this.#dirty.add(name)
    if (this.#isReverse(name)) return
    // Every ancestor of an in-zone name exists (RFC 8020): count this owner-name below each of them.
    const zone = this.#zone
    let n = name
    while (n !== zone && n.length > zone.length) {
      n = n.slice(n.indexOf('.') + 1)
      let anc = this.#nodes.get(n)
      if (!anc) this.#nodes.set(n, (anc = new Node()))
      if (!anc.exists()) this.#dirty.add(n)
      anc.below++
    }
  }

  #remove(owner: string, name: string): void {
    const node = this.#nodes.get(name)!
    node.delete(owner)
    this.#dirty.add(name)
    if (!node.exists()) this.#nodes.delete(name)
    if (this.#isReverse(name)) return
    const zone = this.#zone
    let n = name
    while (n !== zone && n.length > zone.length) {
      n = n.slice(n.indexOf('.') + 1)
      const anc = this.#nodes.get(n)!
      anc.below--
      if (!anc.exists()) {
        this.#nodes.delete(n)
        this.#dirty.add(n)
      }
    }
  }

  /** Rebuilds the entry of one dirty name; returns its wire key (null when the name cannot be written). */
  #compileName(name: string): string | null {
    const key = wireKey(name)
    if (key === null) return null
    const node = this.#nodes.get(name)
    const old = this.#names.get(key) as LazyEntry | undefined
    if (old?.hasData) this.#recordNames--
    if (!node || !node.exists()) {
      this.#names.delete(key)
      return key
    }
    const entry = new LazyEntry(key.length, node, this.#isReverse(name), this)
    if (entry.hasData) this.#recordNames++
    this.#names.set(key, entry)
    return key
  }

  /** Merged records at `name` (SRV targets and NS glue), or undefined when it holds none. */
  lookup(name: string): NameData | undefined {
    return this.#nodes.get(name)?.merge(false)
  }

  get zoneName(): string {
    return this.#zone
  }

  get serial(): number {
    return this.#serial
  }
}

/**
 * A name's answers, compiled on the first query that needs them (most names of a big zone are never asked). An entry
 * is replaced whenever its name is dirty, so the node it reads is the one it was made for.
 */
class LazyEntry implements NameEntry {
  readonly wireLen: number
  readonly cname: string | null
  readonly reverse: boolean
  readonly hasData: boolean
  readonly #serial: number
  #sets: ReadonlyMap<number, RRSet> | null = null
  #node: Node | null
  #index: ZoneIndex | null

  constructor(wireLen: number, node: Node, reverse: boolean, index: ZoneIndex) {
    this.wireLen = wireLen
    this.reverse = reverse
    this.#serial = index.serial
    const single = node.single
    if (single !== null) {
      this.cname = single.cname
      this.hasData = recordsHaveData(single)
    } else {
      const d = node.merge(reverse)
      this.cname = d.cname
      this.hasData = d.hasData()
    }
    this.#node = node
    this.#index = index
  }

  get sets(): ReadonlyMap<number, RRSet> {
    if (this.#sets === null) {
      const index = this.#index!
      const d = this.#node!.merge(this.reverse)
      this.#sets = compile(this.wireLen, d, (t) => index.lookup(t), index.zoneName, index.options.ttl, this.#serial)
      this.#node = null
      this.#index = null
    }
    return this.#sets
  }
}

export function buildZone(snapshot: Snapshot, options: ZoneOptions, previousSerial: number): Zone {
  return new ZoneIndex(options).apply(snapshot, previousSerial).zone
}

function podRecords(p: PodState, zone: string): Contribution {
  const own: Contribution = new Map()
  if (p.pod.meta.deletionTimestamp !== null) return own
  const ns = p.pod.meta.namespace
  for (const ip of p.pod.status.podIPs) {
    const name = `${dashedIp(ip)}.${ns}.pod.${zone}`.toLowerCase()
    let r = own.get(name)
    if (!r) own.set(name, (r = emptyRecords()))
    addAddress(r, ip)
  }
  return own
}

function serviceRecords(s: ServiceState, zone: string, pods: boolean): Contribution {
  const own: Contribution = new Map()
  const at = (name: string): Records => {
    let r = own.get(name)
    if (!r) own.set(name, (r = emptyRecords()))
    return r
  }
  addService(s, zone, at)
  if (pods) {
    for (const a of s.addresses) {
      if (a.terminating) continue
      addAddress(at(`${dashedIp(a.ip)}.${s.namespace}.pod.${zone}`.toLowerCase()), a.ip)
    }
  }
  return own
}

function addService(s: ServiceState, zone: string, at: (name: string) => Records): void {
  const svcName = `${s.name}.${s.namespace}.svc.${zone}`.toLowerCase()
  const spec = s.service.spec
  if (spec.type === 'ExternalName') {
    if (spec.externalName) at(svcName).cname = spec.externalName.replace(/\.$/, '').toLowerCase()
    return
  }
  const ready = s.addresses.filter((a) => a.ready)
  if (s.headless && ready.length === 0) return // NXDOMAIN for every name of it (specs/dns.md §4.5)
  const svc = at(svcName)
  const hostOf = new Map<string, string>()
  for (const a of ready) {
    const host = (a.hostname ?? dashedIp(a.ip)).toLowerCase()
    const hostName = `${host}.${svcName}`
    hostOf.set(a.ip, hostName)
    addAddress(at(hostName), a.ip)
    const rev = at(reverseName(a.ip))
    if (!rev.ptr.includes(hostName)) rev.ptr.push(hostName)
    if (s.headless) addAddress(svc, a.ip)
  }
  if (!s.headless) {
    for (const ip of s.clusterIPs) {
      addAddress(svc, ip)
      const rev = at(reverseName(ip))
      if (!rev.ptr.includes(svcName)) rev.ptr.push(svcName)
    }
  }
  for (const p of s.ports) {
    if (!p.name) continue
    const owner = at(`_${p.name}._${p.protocol.toLowerCase()}.${svcName}`.toLowerCase())
    const specs: SrvSpec[] = []
    if (s.headless) {
      for (const ep of p.endpoints) {
        const target = ep.ready ? hostOf.get(ep.ip) : undefined
        if (target) specs.push({ port: ep.port, target })
      }
    } else {
      specs.push({ port: p.port, target: svcName })
    }
    owner.srv.push(...specs)
    svc.srv.push(...specs)
  }
}

function dedupeSrv(list: readonly SrvSpec[]): SrvSpec[] {
  const seen = new Set<string>()
  const out: SrvSpec[] = []
  for (const s of list) {
    const k = `${s.target}|${s.port}`
    if (seen.has(k)) continue
    seen.add(k)
    out.push(s)
  }
  return out
}

function compile(
  wireLen: number,
  d: NameData,
  lookup: (name: string) => NameData | undefined,
  zone: string,
  ttl: number,
  serial: number,
): ReadonlyMap<number, RRSet> {
  const base = 12 + wireLen + 4
  const sets = new Map<number, RRSet>()
  const srv = dedupeSrv(d.srv)
  const a = [...d.a]
  const aaaa = [...d.aaaa]
  const ptr = [...d.ptr]

  // Each writer function appends the RRs of one type; `ends` collects RR boundaries.
  type Emit = (w: SectionWriter, ends: number[]) => void
  const emitA: Emit = (w, ends) => {
    for (const ip of a) {
      w.rrPointer(12, TYPE.A, ttl)
      w.rdata(() => w.bytes(ipBytes(ip)))
      ends.push(w.length)
    }
  }
  const emitAAAA: Emit = (w, ends) => {
    for (const ip of aaaa) {
      w.rrPointer(12, TYPE.AAAA, ttl)
      w.rdata(() => w.bytes(ipBytes(ip)))
      ends.push(w.length)
    }
  }
  const emitCname: Emit = (w, ends) => {
    if (d.cname === null) return
    w.rrPointer(12, TYPE.CNAME, ttl)
    w.rdata(() => w.name(d.cname!))
    ends.push(w.length)
  }
  const emitTxt: Emit = (w, ends) => {
    if (d.txt === null) return
    w.rrPointer(12, TYPE.TXT, 28800)
    const b = Buffer.from(d.txt, 'latin1')
    w.rdata(() => {
      w.u8(b.length)
      w.bytes(b)
    })
    ends.push(w.length)
  }
  const weight = Math.max(1, Math.floor(100 / Math.max(1, srv.length)))
  const emitSrv: Emit = (w, ends) => {
    for (const s of srv) {
      w.rrPointer(12, TYPE.SRV, ttl)
      w.rdata(() => {
        w.u16(0)
        w.u16(weight)
        w.u16(s.port)
        w.name(s.target)
      })
      ends.push(w.length)
    }
  }
  const emitPtr: Emit = (w, ends) => {
    for (const target of ptr) {
      w.rrPointer(12, TYPE.PTR, ttl)
      w.rdata(() => w.name(target))
      ends.push(w.length)
    }
  }
  const emitSoa: Emit = (w, ends) => {
    if (!d.apex) return
    w.rrPointer(12, TYPE.SOA, Math.min(ttl, 300))
    w.rdata(() => {
      w.name(`ns.dns.${zone}`)
      w.name(`hostmaster.${zone}`)
      for (const v of [serial, 7200, 1800, 86400, ttl]) w.u32(v)
    })
    ends.push(w.length)
  }
  const emitNs: Emit = (w, ends) => {
    if (!d.apex) return
    w.rrPointer(12, TYPE.NS, ttl)
    w.rdata(() => w.name(`ns.dns.${zone}`))
    ends.push(w.length)
  }
  // Glue / SRV targets: A and AAAA of in-zone names, appended after the answer in the same writer.
  const emitAddressesOf = (w: SectionWriter, targets: readonly string[]): number => {
    let count = 0
    for (const t of new Set(targets)) {
      const td = lookup(t)
      if (!td) continue
      for (const ip of td.a) {
        w.rrNamed(t, TYPE.A, ttl)
        w.rdata(() => w.bytes(ipBytes(ip)))
        count++
      }
      for (const ip of td.aaaa) {
        w.rrNamed(t, TYPE.AAAA, ttl)
        w.rdata(() => w.bytes(ipBytes(ip)))
        count++
      }
    }
    return count
  }

  const make = (emits: readonly Emit[], glue: readonly string[], shuffle: number): RRSet | null => {
    const w = new SectionWriter(base)
    const ends: number[] = []
    for (const e of emits) e(w, ends)
    if (ends.length === 0) return null
    const answerLen = w.length
    const arCount = emitAddressesOf(w, glue)
    const all = w.take()
    return {
      answer: all.subarray(0, answerLen),
      ends,
      additional: all.subarray(answerLen),
      arCount,
      shuffle: ends.length > 1 ? shuffle : 0,
    }
  }
  const put = (type: number, set: RRSet | null) => {
    if (set) sets.set(type, set)
  }
  put(TYPE.A, make([emitA], [], 4))
  put(TYPE.AAAA, make([emitAAAA], [], 16))
  put(TYPE.CNAME, make([emitCname], [], 0))
  put(TYPE.TXT, make([emitTxt], [], 0))
  put(
    TYPE.SRV,
    make(
      [emitSrv],
      srv.map((s) => s.target),
      0,
    ),
  )
  put(TYPE.PTR, make([emitPtr], [], 0))
  put(TYPE.SOA, make([emitSoa], [], 0))
  put(TYPE.NS, make([emitNs], [`ns.dns.${zone}`], 0))
  put(TYPE.ANY, make([emitCname, emitSoa, emitNs, emitA, emitAAAA, emitTxt, emitSrv, emitPtr], [], 0))
  return sets
}
