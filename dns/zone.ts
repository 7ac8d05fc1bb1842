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

/** What the zone is derived from: a Snapshot, or the state a DNS worker rebuilds from deltas (dns/zone-delta.ts). */
type ZoneSource = Pick<Snapshot, 'services' | 'pods' | 'namespaces' | 'builtAt'>

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

const scratch = Buffer.alloc(256)

/**
 * The wire key of a lowercase dotted name (what `nameKey` gives), or null when a label is empty or too long. Built in
 * a Buffer so the key is one flat string: a key made by concatenation keeps every piece alive.
 */
function wireKey(name: string): string | null {
  let p = 0
  let start = 0
  for (;;) {
    let end = name.indexOf('.', start)
    if (end < 0) end = name.length
    const len = end - start
    if (len === 0 || len > 63 || p + len + 2 > 255) return null
    scratch[p++] = len
    for (let i = start; i < end; i++) scratch[p++] = name.charCodeAt(i)
    if (end === name.length) break
    start = end + 1
  }
  scratch[p++] = 0
  return scratch.toString('latin1', 0, p)
}

/** The wire key of the parent name. */
function parentKey(key: string): string {
  return key.slice(1 + key.charCodeAt(0))
}

const REVERSE4_KEY = '\x07in-addr\x04arpa\x00'
const REVERSE6_KEY = '\x03ip6\x04arpa\x00'

function isReverseKey(key: string): boolean {
  return key.endsWith(REVERSE4_KEY) || key.endsWith(REVERSE6_KEY)
}

/** One owner's records, by wire key. */
type Contribution = Map<string, Records>

/** What a name's answers are compiled against. */
interface CompileContext {
  readonly zoneName: string
  readonly ttl: number
  readonly serial: number
  lookup(name: string): NameData | undefined
}

/**
 * A name in the index, and its entry in the zone: the owners that put records there, how many owner-names lie below
 * it (an empty non-terminal exists while that is above zero), and its answers, compiled on the first query that needs
 * them (most names of a big zone are never asked) and dropped whenever its records change.
 */
class Node implements NameEntry {
  readonly wireLen: number
  readonly reverse: boolean
  cname: string | null = null
  hasData = false
  below = 0
  /** The owner when there is exactly one (most names): no Map per name. */
  #owner: string | null = null
  #records: Records | null = null
  /** Two owners or more. */
  #more: Map<string, Records> | null = null
  #sets: ReadonlyMap<number, RRSet> | null = null
  readonly #ctx: CompileContext

  constructor(key: string, ctx: CompileContext) {
    this.wireLen = key.length
    this.reverse = isReverseKey(key)
    this.#ctx = ctx
  }

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

  /** Records of every owner merged in owner order, so the result does not depend on the order of changes. */
  merge(): NameData {
    const d = new NameData()
    d.reverse = this.reverse
    if (this.#records !== null) d.add(this.#records)
    else if (this.#more !== null) {
      const owners = [...this.#more.keys()].sort()
      for (const o of owners) d.add(this.#more.get(o)!)
    }
    return d
  }

  /** After its records changed: what the zone reads without compiling, and no compiled answers. */
  refresh(): void {
    this.#sets = null
    if (this.#records !== null) {
      this.cname = this.#records.cname
      this.hasData = recordsHaveData(this.#records)
    } else {
      const d = this.merge()
      this.cname = d.cname
      this.hasData = d.hasData()
    }
  }

  get sets(): ReadonlyMap<number, RRSet> {
    if (this.#sets === null) {
      const c = this.#ctx
      this.#sets = compile(this.wireLen, this.merge(), (t) => c.lookup(t), c.zoneName, c.ttl, c.serial)
    }
    return this.#sets
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

/** A builder of one contribution: `at(name)` gives the records at a dotted name (a throwaway for unwritable names). */
function contribution(): { own: Contribution; at: (name: string) => Records } {
  const own: Contribution = new Map()
  const at = (name: string): Records => {
    const key = wireKey(name)
    if (key === null) return emptyRecords()
    let r = own.get(key)
    if (!r) own.set(key, (r = emptyRecords()))
    return r
  }
  return { own, at }
}

const OWNER_ZONE = '0'
const ownerOfService = (key: string) => `s:${key}`
const ownerOfPod = (key: string) => `p:${key}`
const ownerOfNamespace = (ns: string) => `n:${ns}`

/**
 * The zone as a mutable index that a Snapshot updates in place (issue 14): every owner (the zone's own names, each
 * namespace, Service and Pod) contributes records at names; a new Snapshot re-derives only the owners whose state
 * changed (ServiceState and PodState objects are shared between Snapshots when unchanged, so a changed one is a new
 * object) and refreshes only the names those touch. A contribution is not stored: the previous one is derived again
 * from the previous state when needed. `buildZone` is the same index applied once from empty: the full rebuild the
 * incremental path must equal.
 */
export class ZoneIndex implements CompileContext {
  readonly options: ZoneOptions
  readonly zoneName: string
  readonly ttl: number
  readonly #zoneKey: string
  /** Wire key → name: the zone's names Map itself. */
  readonly #nodes = new Map<string, Node>()
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
    this.zoneName = options.zone.replace(/\.$/, '').toLowerCase()
    this.ttl = options.ttl
    this.#zoneKey = nameToWire(this.zoneName).toString('latin1')
    this.#setOwner(OWNER_ZONE, null, this.#zoneRecords())
  }

  get serial(): number {
    return this.#serial
  }

  #zoneRecords(): Contribution {
    const zone = this.zoneName
    const { own, at } = contribution()
    at(zone).apex = true
    at(`dns-version.${zone}`).txt = '1.1.0'
    const ns = at(`ns.dns.${zone}`)
    for (const ip of this.options.serverAddresses) addAddress(ns, ip)
    at(`svc.${zone}`)
    at(`pod.${zone}`)
    return own
  }

  #namespaceRecords(ns: string): Contribution {
    const { own, at } = contribution()
    at(`${ns}.svc.${this.zoneName}`.toLowerCase())
    if (this.options.pods !== 'disabled') at(`${ns}.pod.${this.zoneName}`.toLowerCase())
    return own
  }

  /**
   * Brings the index to `snapshot` and returns the Zone to serve with the wire keys of the names whose entry was
   * added, changed or removed. Cost: one identity check per Service and Pod, plus the work of what changed.
   */
  apply(snapshot: ZoneSource, previousSerial: number): { zone: Zone; changed: string[] } {
    const mark = ++this.#mark
    const zone = this.zoneName
    const pods = this.options.pods === 'verified'
    if (!sameList(snapshot.namespaces, this.#namespaces, (a, b) => a === b)) {
      const now = new Set(snapshot.namespaces)
      const before = new Set(this.#namespaces)
      for (const ns of this.#namespaces)
        if (!now.has(ns)) this.#setOwner(ownerOfNamespace(ns), this.#namespaceRecords(ns), null)
      for (const ns of snapshot.namespaces)
        if (!before.has(ns)) this.#setOwner(ownerOfNamespace(ns), null, this.#namespaceRecords(ns))
      this.#namespaces = snapshot.namespaces
    }
    for (const s of snapshot.services) {
      const held = this.#services.get(s.key)
      if (held && held.state === s) {
        held.mark = mark
        continue
      }
      this.#services.set(s.key, { state: s, mark })
      const prev = held ? serviceRecords(held.state, zone, pods) : null
      this.#setOwner(ownerOfService(s.key), prev, serviceRecords(s, zone, pods))
    }
    for (const [key, held] of this.#services) {
      if (held.mark === mark) continue
      this.#services.delete(key)
      this.#setOwner(ownerOfService(key), serviceRecords(held.state, zone, pods), null)
    }
    if (pods) {
      for (const p of snapshot.pods) {
        const held = this.#pods.get(p.key)
        if (held && held.state === p) {
          held.mark = mark
          continue
        }
        this.#pods.set(p.key, { state: p, mark })
        this.#setOwner(ownerOfPod(p.key), held ? podRecords(held.state, zone) : null, podRecords(p, zone))
      }
      for (const [key, held] of this.#pods) {
        if (held.mark === mark) continue
        this.#pods.delete(key)
        this.#setOwner(ownerOfPod(key), podRecords(held.state, zone), null)
      }
    }

    const serial = Math.max(previousSerial, Math.floor(snapshot.builtAt / 1000)) >>> 0 || 1
    if (serial !== this.#serial || this.#zoneObject === null) {
      this.#serial = serial
      this.#dirty.add(this.#zoneKey) // the apex SOA carries the serial
      this.#zoneObject = this.#makeZone()
    }
    const changed: string[] = []
    for (const key of this.#dirty) {
      const node = this.#nodes.get(key)
      if (node) {
        if (node.hasData) this.#recordNames--
        node.refresh()
        if (node.hasData) this.#recordNames++
      }
      changed.push(key)
    }
    this.#dirty.clear()
    if (changed.length > 0) this.#zoneObject = { ...this.#zoneObject, recordNames: this.#recordNames }
    return { zone: this.#zoneObject, changed }
  }

  #makeZone(): Zone {
    const zone = this.zoneName
    const ttl = this.options.ttl
    const soaNumbers = Buffer.alloc(20)
    soaNumbers.writeUInt32BE(this.#serial, 0)
    soaNumbers.writeUInt32BE(7200, 4)
    soaNumbers.writeUInt32BE(1800, 8)
    soaNumbers.writeUInt32BE(86400, 12)
    soaNumbers.writeUInt32BE(ttl, 16)
    return {
      options: this.options,
      zoneKey: this.#zoneKey,
      zoneWireLen: this.#zoneKey.length,
      names: this.#nodes,
      serial: this.#serial,
      soaMname: nameToWire(`ns.dns.${zone}`),
      soaNumbers,
      soaTtl: Math.min(ttl, 300),
      recordNames: this.#recordNames,
    }
  }

  /** Replaces what `owner` contributes (`prev` → `next`, null: none), marking the names whose answers change. */
  #setOwner(owner: string, prev: Contribution | null, next: Contribution | null): void {
    if (next !== null) seal(next)
    if (prev) {
      for (const [key, r] of prev) {
        const n = next?.get(key)
        if (n === undefined) this.#remove(owner, key)
        else if (!sameRecords(r, n)) {
          this.#nodes.get(key)!.set(owner, n)
          this.#dirty.add(key)
        }
      }
    }
    if (next) for (const [key, r] of next) if (!prev?.has(key)) this.#add(owner, key, r)
  }

  #node(key: string): Node {
    let node = this.#nodes.get(key)
    if (!node) this.#nodes.set(key, (node = new Node(key, this)))
    return node
  }

  #add(owner: string, key: string, r: Records): void {
    const node = this.#node(key)
    node.set(owner, r)
    this.#dirty.add(key)
    if (node.reverse) return
    // Every ancestor of an in-zone name exists (RFC 8020): count this owner-name below each of them.
    const zk = this.#zoneKey
    let k = key
    while (k !== zk && k.length > zk.length) {
      k = parentKey(k)
      const anc = this.#node(k)
      if (!anc.exists()) this.#dirty.add(k)
      anc.below++
    }
  }

  #drop(key: string, node: Node): void {
    this.#nodes.delete(key)
    if (node.hasData) {
      this.#recordNames--
      node.hasData = false
    }
    this.#dirty.add(key)
  }

  #remove(owner: string, key: string): void {
    const node = this.#nodes.get(key)!
    node.delete(owner)
    this.#dirty.add(key)
    if (!node.exists()) this.#drop(key, node)
    if (node.reverse) return
    const zk = this.#zoneKey
    let k = key
    while (k !== zk && k.length > zk.length) {
      k = parentKey(k)
      const anc = this.#nodes.get(k)!
      anc.below--
      if (!anc.exists()) this.#drop(k, anc)
    }
  }

  /** Merged records at a dotted name (SRV targets and NS glue), or undefined when it holds none. */
  lookup(name: string): NameData | undefined {
    const key = wireKey(name)
    return key === null ? undefined : this.#nodes.get(key)?.merge()
  }
}

export function buildZone(snapshot: Snapshot, options: ZoneOptions, previousSerial: number): Zone {
  return new ZoneIndex(options).apply(snapshot, previousSerial).zone
}

function podRecords(p: PodState, zone: string): Contribution {
  const { own, at } = contribution()
  if (p.pod.meta.deletionTimestamp !== null) return own
  const ns = p.pod.meta.namespace
  for (const ip of p.pod.status.podIPs) addAddress(at(`${dashedIp(ip)}.${ns}.pod.${zone}`.toLowerCase()), ip)
  return own
}

function serviceRecords(s: ServiceState, zone: string, pods: boolean): Contribution {
  const { own, at } = contribution()
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
