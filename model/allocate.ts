// Deterministic allocation of ClusterIPs, NodePorts and health-check node ports.
//
// What a manifest writes is honoured first (an address outside the service CIDR included: DNS answers what the user
// wrote; lb/ reports when it cannot bind it). Every other Service gets the first free slot after a hash of its key, so
// the same manifests give the same addresses after a restart, whatever order the files are read in. A Service keeps
// the slot it had in the previous Snapshot while it still exists, so adding a Service never moves another.

import { createHash } from 'node:crypto'
import type { Service } from './objects.ts'
import { objectKey } from './objects.ts'
import { bigIntToIp, cidrContains, ipFamily, type Cidr } from './ip.ts'

export const NODE_PORT_MIN = 30000
export const NODE_PORT_MAX = 32767

export interface ServiceAllocation {
  readonly clusterIPs: readonly string[]
  /** Keyed by the Service port's index. */
  readonly nodePorts: readonly (number | null)[]
  readonly healthCheckNodePort: number | null
  readonly errors: readonly string[]
}

export type AllocationMap = ReadonlyMap<string, ServiceAllocation>

function hashOf(text: string): bigint {
  return BigInt('0x' + createHash('sha256').update(text).digest('hex').slice(0, 16))
}

function needsNodePorts(s: Service): boolean {
  return s.spec.type === 'NodePort' || s.spec.type === 'LoadBalancer'
}

function needsHealthCheckNodePort(s: Service): boolean {
  return s.spec.type === 'LoadBalancer' && s.spec.externalTrafficPolicy === 'Local'
}

/** Families a Service's ClusterIPs should cover, from ipFamilies/ipFamilyPolicy and the CIDRs we have. */
export function wantedFamilies(s: Service, cidrs: readonly Cidr[]): (4 | 6)[] {
  const have = new Set(cidrs.map((c) => c.family))
  const asked = s.spec.ipFamilies.map((f) => (f === 'IPv4' ? 4 : 6) as 4 | 6)
  let families: (4 | 6)[] = asked.length > 0 ? asked : [cidrs[0]?.family ?? 4]
  if (s.spec.ipFamilyPolicy !== 'SingleStack' && asked.length < 2) {
    for (const f of [4, 6] as const) if (have.has(f) && !families.includes(f)) families.push(f)
  }
  if (s.spec.ipFamilyPolicy === 'SingleStack') families = families.slice(0, 1)
  return families
}

class SlotTable {
  readonly #taken: Set<string>
  constructor(taken: Set<string> = new Set()) {
    this.#taken = taken
  }
  has(v: string): boolean {
    return this.#taken.has(v)
  }
  take(v: string): void {
    this.#taken.add(v)
  }
}

function allocateIp(key: string, cidr: Cidr, taken: SlotTable): string | null {
  // Skip the network address, and the broadcast address for IPv4.
  const first = 1n
  const usable = cidr.size - (cidr.family === 4 ? 2n : 1n)
  if (usable <= 0n) return null
  const start = hashOf(key) % usable
  // Bounded: at most 65,536 probes even in a huge IPv6 block (the block is never that full in practice).
  const limit = usable < 65536n ? usable : 65536n
  for (let i = 0n; i < limit; i++) {
    const ip = bigIntToIp(cidr.base + first + ((start + i) % usable), cidr.family)
    if (!taken.has(ip)) return ip
  }
  return null
}

function allocatePort(seed: string, taken: Set<number>): number | null {
  const span = NODE_PORT_MAX - NODE_PORT_MIN + 1
  const start = Number(hashOf(seed) % BigInt(span))
  for (let i = 0; i < span; i++) {
    const port = NODE_PORT_MIN + ((start + i) % span)
    if (!taken.has(port)) return port
  }
  return null
}

/** The Service object each allocation was computed for: unchanged Services keep theirs without a new pass. */
const madeFor = new WeakMap<ServiceAllocation, Service>()
/** The CIDRs of the last full pass (an incremental one is valid only for the same). */
let lastCidrs: readonly Cidr[] | null = null

/** What an allocation map holds as a whole: the addresses and ports taken, and whether any allocation failed. */
interface Held {
  readonly ips: ReadonlySet<string>
  readonly ports: ReadonlySet<number>
  readonly errors: boolean
}
const heldBy = new WeakMap<AllocationMap, Held>()

function heldOf(map: AllocationMap): Held {
  let h = heldBy.get(map)
  if (h === undefined) {
    const ips = new Set<string>()
    const ports = new Set<number>()
    let errors = false
    for (const a of map.values()) {
      if (a.errors.length > 0) errors = true
      for (const ip of a.clusterIPs) ips.add(ip)
      for (const p of a.nodePorts) if (p !== null) ports.add(p)
      if (a.healthCheckNodePort !== null) ports.add(a.healthCheckNodePort)
    }
    heldBy.set(map, (h = { ips, ports, errors }))
  }
  return h
}

/** "namespace/name" of a Service, once per object. */
const keys = new WeakMap<Service, string>()
function keyOf(s: Service): string {
  let k = keys.get(s)
  if (k === undefined) keys.set(s, (k = objectKey(s.meta)))
  return k
}

function writesAny(s: Service): boolean {
  return (
    s.spec.clusterIPs.length > 0 ||
    s.spec.ports.some((p) => p.nodePort !== null) ||
    (needsHealthCheckNodePort(s) && s.spec.healthCheckNodePort !== null)
  )
}

/**
 * Allocates for every Service. `services` may come in any order; the result does not depend on it.
 * `previous` is the last Snapshot's map (null at start).
 *
 * When only some Services changed, none of the changed ones writes an address or port, and no allocation has errors,
 * the full passes would keep every unchanged allocation as it is: then only the changed Services are allocated,
 * against the slots the others hold (issue 14: a change costs what changed). Same result, by construction.
 *
 * In steps: it yields every 128 Services, so a caller that builds in slices (the Store's first build at 10,000
 * Services) can give the event loop a turn; `drain` runs it in one go. Nothing may change the inputs meanwhile.
 */
export function* allocateAddressesSteps(
  services: readonly Service[],
  cidrs: readonly Cidr[],
  previous: AllocationMap | null,
): Generator<void, AllocationMap> {
  const quick = previous !== null && cidrs === lastCidrs ? yield* allocateChanged(services, cidrs, previous) : null
  if (quick) return quick
  lastCidrs = cidrs
  const result = yield* allocateAllSteps(services, cidrs, previous)
  yield
  for (const s of services) {
    const a = result.get(objectKey(s.meta))
    if (a) madeFor.set(a, s)
  }
  return result
}

/** Runs a step generator to its end. */
export function drain<T>(steps: Generator<void, T>): T {
  for (;;) {
    const r = steps.next()
    if (r.done === true) return r.value
  }
}

/** Services between two yields of a step generator: well under a millisecond of work each. */
export const STEP_ITEMS = 128

function* allocateChanged(
  services: readonly Service[],
  cidrs: readonly Cidr[],
  previous: AllocationMap,
): Generator<void, AllocationMap | null> {
  const before = heldOf(previous)
  if (before.errors) return null
  const result = new Map<string, ServiceAllocation>()
  const changed: Service[] = []
  let step = 0
  for (const s of services) {
    if (++step % STEP_ITEMS === 0) yield
    const key = keyOf(s)
    const prev = previous.get(key)
    if (prev && madeFor.get(prev) === s) result.set(key, prev)
    else {
      if (writesAny(s)) return null
      changed.push(s)
    }
  }
  // Nothing changed: the same map, so the next build sees the same allocations by identity.
  if (changed.length === 0 && result.size === previous.size) return previous
  // The slots every unchanged Service holds: the previous map's, less what changed or went away.
  const ips = new Set(before.ips)
  const ports = new Set(before.ports)
  const release = (a: ServiceAllocation) => {
    for (const ip of a.clusterIPs) ips.delete(ip)
    for (const p of a.nodePorts) if (p !== null) ports.delete(p)
    if (a.healthCheckNodePort !== null) ports.delete(a.healthCheckNodePort)
  }
  let carried = result.size
  const changedKeys = new Set<string>()
  for (const s of changed) {
    const key = keyOf(s)
    changedKeys.add(key)
    const prev = previous.get(key)
    if (prev) {
      release(prev)
      carried++
    }
  }
  if (carried !== previous.size) {
    for (const [key, a] of previous) if (!result.has(key) && !changedKeys.has(key)) release(a)
  }
  const fresh = drain(allocateAllSteps(changed, cidrs, previous, { ips, ports }))
  for (const s of changed) {
    const key = keyOf(s)
    const a = fresh.get(key)!
    if (a.errors.length > 0) return null
    madeFor.set(a, s)
    result.set(key, a)
  }
  // allocateAll took the changed Services' slots into the same sets.
  heldBy.set(result, { ips, ports, errors: false })
  return result
}

/** The three passes; `held`: allocations of other Services whose slots are taken (the incremental case). */
function* allocateAllSteps(
  services: readonly Service[],
  cidrs: readonly Cidr[],
  previous: AllocationMap | null,
  held: { ips: Set<string>; ports: Set<number> } | null = null,
): Generator<void, Map<string, ServiceAllocation>> {
  let step = 0
  const keyOf = new Map<Service, string>()
  for (const s of services) keyOf.set(s, objectKey(s.meta))
  yield
  const sorted = [...services].sort((a, b) => (keyOf.get(a)! < keyOf.get(b)! ? -1 : 1))
  yield
  const ips = new SlotTable(held?.ips)
  const ports = held?.ports ?? new Set<number>()
  const errors = new Map<string, string[]>()
  const err = (key: string, msg: string) => {
    let list = errors.get(key)
    if (!list) errors.set(key, (list = []))
    list.push(msg)
  }
  const explicitIps = new Map<string, string[]>()
  const explicitPorts = new Map<string, (number | null)[]>()
  const explicitHc = new Map<string, number | null>()

  // Pass 1: what manifests write. A second Service claiming the same address or port is refused, as the API server
  // refuses the second create.
  for (const s of sorted) {
    if (++step % STEP_ITEMS === 0) yield
    const key = objectKey(s.meta)
    const list: string[] = []
    if (!s.spec.headless && s.spec.type !== 'ExternalName') {
      for (const ip of s.spec.clusterIPs) {
        if (ips.has(ip)) err(key, `spec.clusterIPs: ${ip} is already allocated to another Service`)
        else {
          ips.take(ip)
          list.push(ip)
        }
      }
    }
    explicitIps.set(key, list)
    const nps: (number | null)[] = []
    for (const [i, p] of s.spec.ports.entries()) {
      if (needsNodePorts(s) && p.nodePort !== null) {
        if (ports.has(p.nodePort)) {
          err(key, `spec.ports[${i}].nodePort: ${p.nodePort} is already allocated`)
          nps.push(null)
        } else {
          ports.add(p.nodePort)
          nps.push(p.nodePort)
        }
      } else nps.push(null)
    }
    explicitPorts.set(key, nps)
    let hc: number | null = null
    if (needsHealthCheckNodePort(s) && s.spec.healthCheckNodePort !== null) {
      if (ports.has(s.spec.healthCheckNodePort)) {
        err(key, `spec.healthCheckNodePort: ${s.spec.healthCheckNodePort} is already allocated`)
      } else {
        ports.add(s.spec.healthCheckNodePort)
        hc = s.spec.healthCheckNodePort
      }
    }
    explicitHc.set(key, hc)
  }

  // Pass 2: keep what the previous Snapshot gave, where still free and still wanted.
  const result = new Map<string, ServiceAllocation>()
  const pending: Service[] = []
  for (const s of sorted) {
    if (++step % STEP_ITEMS === 0) yield
    const key = objectKey(s.meta)
    const prev = previous?.get(key)
    const clusterIPs = [...(explicitIps.get(key) ?? [])]
    const nodePorts = [...(explicitPorts.get(key) ?? [])]
    let hc = explicitHc.get(key) ?? null
    if (prev) {
      if (
        clusterIPs.length === 0 &&
        s.spec.clusterIPs.length === 0 &&
        !s.spec.headless &&
        s.spec.type !== 'ExternalName'
      ) {
        const fams = wantedFamilies(s, cidrs)
        for (const ip of prev.clusterIPs) {
          if (!ips.has(ip) && fams.includes(ipFamily(ip) as 4 | 6) && cidrs.some((c) => cidrContains(c, ip))) {
            ips.take(ip)
            clusterIPs.push(ip)
          }
        }
      }
      for (let i = 0; i < nodePorts.length; i++) {
        const old = prev.nodePorts[i]
        if (nodePorts[i] === null && needsNodePorts(s) && old != null && !ports.has(old)) {
          ports.add(old)
          nodePorts[i] = old
        }
      }
      if (
        hc === null &&
        needsHealthCheckNodePort(s) &&
        prev.healthCheckNodePort !== null &&
        !ports.has(prev.healthCheckNodePort)
      ) {
        ports.add(prev.healthCheckNodePort)
        hc = prev.healthCheckNodePort
      }
    }
    result.set(key, { clusterIPs, nodePorts, healthCheckNodePort: hc, errors: [] })
    pending.push(s)
  }

  // Pass 3: hash-probe the rest.
  for (const s of pending) {
    if (++step % STEP_ITEMS === 0) yield
    const key = objectKey(s.meta)
    const a = result.get(key)!
    const clusterIPs = [...a.clusterIPs]
    if (
      clusterIPs.length === 0 &&
      s.spec.clusterIPs.length === 0 &&
      !s.spec.headless &&
      s.spec.type !== 'ExternalName'
    ) {
      for (const fam of wantedFamilies(s, cidrs)) {
        const cidr = cidrs.find((c) => c.family === fam)
        if (!cidr) {
          if (s.spec.ipFamilyPolicy === 'RequireDualStack' || fam === wantedFamilies(s, cidrs)[0]) {
            err(key, `spec.ipFamilies: no --service-cidr for IPv${fam}`)
          }
          continue
        }
        const ip = allocateIp(key, cidr, ips)
        if (ip === null) err(key, `spec.clusterIP: the service CIDR ${cidr.text} is full`)
        else {
          ips.take(ip)
          clusterIPs.push(ip)
        }
      }
    }
    const nodePorts = [...a.nodePorts]
    for (const [i, p] of s.spec.ports.entries()) {
      if (needsNodePorts(s) && nodePorts[i] === null) {
        const port = allocatePort(`${key}|${p.name}|${p.protocol}|${p.port}`, ports)
        if (port === null) err(key, `spec.ports[${i}].nodePort: no free node port in ${NODE_PORT_MIN}-${NODE_PORT_MAX}`)
        else {
          ports.add(port)
          nodePorts[i] = port
        }
      }
    }
    let hc = a.healthCheckNodePort
    if (hc === null && needsHealthCheckNodePort(s)) {
      hc = allocatePort(`${key}|healthCheckNodePort`, ports)
      if (hc !== null) ports.add(hc)
    }
    result.set(
      key,
      reuse(previous?.get(key), { clusterIPs, nodePorts, healthCheckNodePort: hc, errors: errors.get(key) ?? [] }),
    )
  }
  return result
}

const sameStrings = (a: readonly unknown[], b: readonly unknown[]) =>
  a.length === b.length && a.every((x, i) => x === b[i])

/** The previous allocation object when nothing in it changed: model/build-snapshot.ts compares by identity. */
function reuse(prev: ServiceAllocation | undefined, next: ServiceAllocation): ServiceAllocation {
  if (
    prev &&
    prev.healthCheckNodePort === next.healthCheckNodePort &&
    sameStrings(prev.clusterIPs, next.clusterIPs) &&
    sameStrings(prev.nodePorts, next.nodePorts) &&
    sameStrings(prev.errors, next.errors)
  )
    return prev
  return next
}
