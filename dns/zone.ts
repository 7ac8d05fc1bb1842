// The zone index: every name meshlet owns, built once per Snapshot (specs/dns.md §3, §4), with each RRset already
// in wire form. A query then costs one Map lookup and a copy (dns/answer.ts).

import type { Snapshot, ServiceState } from '../model/snapshot.ts'
import { canonicalIp, ipFamily } from '../model/ip.ts'
import { SectionWriter, TYPE, ipBytes, nameKey, nameToWire, reverseName } from './wire.ts'

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

/** Records at one name while the index is being built. */
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
}

/** "10.244.1.5" → "10-244-1-5"; IPv6 ":" → "-", a trailing "-" padded to "-0" (specs/dns.md §4.6). */
export function dashedIp(ip: string): string {
  const canon = canonicalIp(ip) ?? ip
  if (ipFamily(canon) === 4) return canon.replaceAll('.', '-')
  const d = canon.replaceAll(':', '-')
  return d.endsWith('-') ? `${d}0` : d
}

function addAddress(d: NameData, ip: string): void {
  const canon = canonicalIp(ip)
  if (!canon) return
  if (ipFamily(canon) === 4) d.a.add(canon)
  else d.aaaa.add(canon)
}

export function buildZone(snapshot: Snapshot, options: ZoneOptions, previousSerial: number): Zone {
  const zone = options.zone.replace(/\.$/, '').toLowerCase()
  const ttl = options.ttl
  const data = new Map<string, NameData>()
  const at = (name: string): NameData => {
    let d = data.get(name)
    if (!d) {
      d = new NameData()
      data.set(name, d)
    }
    return d
  }

  at(zone).apex = true
  at(`dns-version.${zone}`).txt = '1.1.0'
  const ns = at(`ns.dns.${zone}`)
  for (const ip of options.serverAddresses) addAddress(ns, ip)
  at(`svc.${zone}`)
  at(`pod.${zone}`)
  for (const namespace of snapshot.namespaces) {
    at(`${namespace}.svc.${zone}`.toLowerCase())
    if (options.pods !== 'disabled') at(`${namespace}.pod.${zone}`.toLowerCase())
  }

  for (const s of snapshot.services) addService(s, zone, at)

  if (options.pods === 'verified') {
    const seen = new Set<string>()
    const add = (namespace: string, ip: string) => {
      const k = `${namespace}|${ip}`
      if (seen.has(k)) return
      seen.add(k)
      addAddress(at(`${dashedIp(ip)}.${namespace}.pod.${zone}`.toLowerCase()), ip)
    }
    for (const p of snapshot.pods) {
      if (p.pod.meta.deletionTimestamp !== null) continue
      for (const ip of p.pod.status.podIPs) add(p.pod.meta.namespace, ip)
    }
    for (const s of snapshot.services) for (const a of s.addresses) if (!a.terminating) add(s.namespace, a.ip)
  }

  // Empty non-terminals: every ancestor of an in-zone name exists (RFC 8020).
  for (const name of [...data.keys()]) {
    if (data.get(name)!.reverse) continue
    let n = name
    while (n !== zone && n.length > zone.length) {
      n = n.slice(n.indexOf('.') + 1)
      if (!data.has(n)) data.set(n, new NameData())
    }
  }

  const serial = Math.max(previousSerial, Math.floor(snapshot.builtAt / 1000)) >>> 0 || 1
  const soaTtl = Math.min(ttl, 300)
  const soaNumbers = Buffer.alloc(20)
  soaNumbers.writeUInt32BE(serial, 0)
  soaNumbers.writeUInt32BE(7200, 4)
  soaNumbers.writeUInt32BE(1800, 8)
  soaNumbers.writeUInt32BE(86400, 12)
  soaNumbers.writeUInt32BE(ttl, 16)

  const names = new Map<string, NameEntry>()
  let recordNames = 0
  for (const [name, d] of data) {
    if (d.hasData()) recordNames++
    names.set(nameKey(name), compile(name, d, data, zone, ttl, serial))
  }
  const zw = nameToWire(zone)
  return {
    options,
    zoneKey: zw.toString('latin1'),
    zoneWireLen: zw.length,
    names,
    serial,
    soaMname: nameToWire(`ns.dns.${zone}`),
    soaNumbers,
    soaTtl,
    recordNames,
  }
}

function addService(s: ServiceState, zone: string, at: (name: string) => NameData): void {
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
    rev.reverse = true
    rev.ptr.add(hostName)
    if (s.headless) addAddress(svc, a.ip)
  }
  if (!s.headless) {
    for (const ip of s.clusterIPs) {
      addAddress(svc, ip)
      const rev = at(reverseName(ip))
      rev.reverse = true
      rev.ptr.add(svcName)
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
  name: string,
  d: NameData,
  all: ReadonlyMap<string, NameData>,
  zone: string,
  ttl: number,
  serial: number,
): NameEntry {
  const wireLen = nameToWire(name).length
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
      const td = all.get(t)
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
  return { wireLen, sets, cname: d.cname, reverse: d.reverse }
}
