// LoadBalancer address allocation with MetalLB's semantics (specs/l4-health.md §5): pools of CIDRs and ranges
// (every address usable, .0/.255 skipped only with avoidBuggyIPs), lowest address first, sticky allocations, requested
// IPs and pools by annotation or spec.loadBalancerIP, pinned pools by serviceAllocation and priority, IP sharing by
// allow-shared-ip key. It lives in model/ because DNS, /status and lb/ all read its result from the Snapshot.

import type { IPAddressPool, LabelSelector, Service } from './objects.ts'
import { objectKey } from './objects.ts'
import { bigIntToIp, canonicalIp, ipFamily, ipToBigInt, parseCidr, type Family } from './ip.ts'

export interface LoadBalancerAllocation {
  readonly ips: readonly string[]
  readonly pool: string | null
  /** MetalLB's event text when no address could be given: `Failed to allocate IP for "ns/name": …`. */
  readonly pending: string | null
  /**
   * The address's pool was removed or no longer holds it. The allocation is kept (a live address is never moved
   * silently, specs/l4-health.md §5.3) until the Service's request changes or meshlet restarts.
   */
  readonly stale: boolean
}

export type LoadBalancerAllocationMap = ReadonlyMap<string, LoadBalancerAllocation>

interface Range {
  readonly family: Family
  readonly start: bigint
  readonly end: bigint
}

/** A pool's address ranges in written order; null entries are invalid (validation rejects those pools). */
export function poolRanges(pool: IPAddressPool): Range[] {
  const out: Range[] = []
  for (const a of pool.addresses) {
    const dash = a.indexOf('-')
    if (dash > 0) {
      const s = canonicalIp(a.slice(0, dash).trim())
      const e = canonicalIp(a.slice(dash + 1).trim())
      if (!s || !e || ipFamily(s) !== ipFamily(e)) continue
      out.push({ family: ipFamily(s) as Family, start: ipToBigInt(s), end: ipToBigInt(e) })
    } else {
      const c = parseCidr(a)
      if (c) out.push({ family: c.family, start: c.base, end: c.base + c.size - 1n })
    }
  }
  return out
}

function buggy(n: bigint, family: Family): boolean {
  if (family !== 4) return false
  const last = n & 0xffn
  return last === 0n || last === 255n
}

/** Number of allocatable addresses, per family. */
export function poolCapacity(pool: IPAddressPool): { v4: bigint; v6: bigint } {
  let v4 = 0n
  let v6 = 0n
  for (const r of poolRanges(pool)) {
    let n = r.end - r.start + 1n
    if (pool.avoidBuggyIPs && r.family === 4)
      for (let x = r.start; x <= r.end && x - r.start < 65536n; x++) if (buggy(x, 4)) n--
    if (r.family === 4) v4 += n
    else v6 += n
  }
  return { v4, v6 }
}

function inPool(pool: IPAddressPool, ip: string): boolean {
  const fam = ipFamily(ip)
  if (!fam) return false
  const n = ipToBigInt(ip)
  if (pool.avoidBuggyIPs && buggy(n, fam as Family)) return false
  return poolRanges(pool).some((r) => r.family === fam && n >= r.start && n <= r.end)
}

function annotation(s: Service, name: string): string | null {
  const a = s.meta.annotations
  return a[`metallb.io/${name}`] ?? a[`metallb.universe.tf/${name}`] ?? null
}

function selectorMatches(sel: LabelSelector, labels: Readonly<Record<string, string>>): boolean {
  for (const [k, v] of Object.entries(sel.matchLabels)) if (labels[k] !== v) return false
  for (const e of sel.matchExpressions) {
    const has = e.key in labels
    if (e.operator === 'Exists' && !has) return false
    if (e.operator === 'DoesNotExist' && has) return false
    if (e.operator === 'In' && (!has || !e.values.includes(labels[e.key]!))) return false
    if (e.operator === 'NotIn' && has && e.values.includes(labels[e.key]!)) return false
  }
  return true
}

function pinnedTo(pool: IPAddressPool, s: Service): boolean {
  const sa = pool.serviceAllocation
  if (!sa) return false
  if (sa.namespaces.length > 0 && !sa.namespaces.includes(s.meta.namespace)) return false
  // Namespace labels are not known to meshlet (no Namespace objects): a namespaceSelector matches nothing.
  if (sa.namespaceSelectors.length > 0) return false
  if (sa.serviceSelectors.length > 0 && !sa.serviceSelectors.some((sel) => selectorMatches(sel, s.meta.labels)))
    return false
  return true
}

interface Holder {
  readonly key: string
  readonly sharingKey: string
  readonly backendKey: string
  readonly ports: ReadonlySet<string>
}

function holderOf(s: Service): Holder {
  const sel = s.spec.selector ?? {}
  return {
    key: objectKey(s.meta),
    sharingKey: annotation(s, 'allow-shared-ip') ?? '',
    backendKey:
      s.spec.externalTrafficPolicy === 'Local'
        ? Object.keys(sel)
            .sort()
            .map((k) => `${k}=${sel[k]}`)
            .join(',')
        : '',
    ports: new Set(s.spec.ports.map((p) => `${p.protocol}/${p.port}`)),
  }
}

/** MetalLB's checkSharing: null when `h` may use `ip` alongside its current holders, else the error text. */
function sharingError(h: Holder, ip: string, holders: readonly Holder[]): string | null {
  for (const o of holders) {
    if (o.key === h.key) continue
    if (h.sharingKey === '' || o.sharingKey !== h.sharingKey)
      return `can't change sharing key for "${h.key}", address also in use by ${o.key}`
    if (o.backendKey !== h.backendKey) return `can't change sharing key for "${h.key}", address also in use by ${o.key}`
    for (const p of h.ports) if (o.ports.has(p)) return `port ${p} is already in use on "${ip}"`
  }
  return null
}

function wantedFamilies(s: Service, pool: IPAddressPool): Family[] {
  const have = new Set(poolRanges(pool).map((r) => r.family))
  const asked = s.spec.ipFamilies.map((f) => (f === 'IPv4' ? 4 : 6) as Family)
  if (s.spec.ipFamilyPolicy === 'SingleStack') return [asked[0] ?? (have.has(4) ? 4 : 6)]
  const both: Family[] = asked.length > 0 ? asked : [4, 6]
  if (s.spec.ipFamilyPolicy === 'RequireDualStack') return both
  return both.filter((f) => have.has(f))
}

class Assignments {
  readonly byIp = new Map<string, Holder[]>()
  add(ip: string, h: Holder): void {
    const list = this.byIp.get(ip)
    if (list) list.push(h)
    else this.byIp.set(ip, [h])
  }
  holders(ip: string): readonly Holder[] {
    return this.byIp.get(ip) ?? []
  }
}

function firstFree(pool: IPAddressPool, family: Family, h: Holder, taken: Assignments): string | null {
  for (const r of poolRanges(pool)) {
    if (r.family !== family) continue
    // Bounded scan: a pool larger than 65,536 addresses per range is scanned in its first 65,536 only.
    for (let n = r.start, i = 0; n <= r.end && i < 65536; n++, i++) {
      if (pool.avoidBuggyIPs && buggy(n, family)) continue
      const ip = bigIntToIp(n, family)
      if (sharingError(h, ip, taken.holders(ip)) === null) return ip
    }
  }
  return null
}

function fromPool(s: Service, h: Holder, pool: IPAddressPool, taken: Assignments): string[] | null {
  const ips: string[] = []
  for (const fam of wantedFamilies(s, pool)) {
    const ip = firstFree(pool, fam, h, taken)
    if (ip === null) {
      if (s.spec.ipFamilyPolicy === 'PreferDualStack' && ips.length > 0) continue
      if (s.spec.ipFamilyPolicy === 'PreferDualStack') continue
      return null
    }
    ips.push(ip)
  }
  return ips.length > 0 ? ips : null
}

function priorityOrder(a: IPAddressPool, b: IPAddressPool): number {
  const pa = a.serviceAllocation?.priority ?? 0
  const pb = b.serviceAllocation?.priority ?? 0
  if (pa !== pb) {
    if (pa === 0) return 1
    if (pb === 0) return -1
    return pa - pb
  }
  return a.meta.name < b.meta.name ? -1 : 1
}

function requestedIps(s: Service): { ips: string[] | null; error: string | null } {
  const ann = annotation(s, 'loadBalancerIPs')
  const spec = s.spec.loadBalancerIP
  if (ann !== null && spec !== null)
    return { ips: null, error: 'service can not have both metallb.io/loadBalancerIPs and svc.Spec.LoadBalancerIP' }
  if (ann !== null) return { ips: ann.split(',').map((x) => canonicalIp(x.trim()) ?? x.trim()), error: null }
  if (spec !== null) return { ips: [canonicalIp(spec) ?? spec], error: null }
  return { ips: null, error: null }
}

function allocateOne(
  s: Service,
  pools: readonly IPAddressPool[],
  taken: Assignments,
): { ips: string[]; pool: string } | string {
  const h = holderOf(s)
  const { ips: requested, error } = requestedIps(s)
  if (error) return error
  const poolName = annotation(s, 'address-pool')
  const named = poolName !== null ? pools.find((p) => p.meta.name === poolName) : undefined
  if (poolName !== null && !named) return `unknown pool "${poolName}"`
  if (requested) {
    const pool = pools.find((p) => requested.every((ip) => inPool(p, ip)))
    if (!pool) return `${JSON.stringify(requested)} is not allowed in config`
    if (named && pool !== named)
      return `requested loadBalancer IP(s) ${JSON.stringify(requested)} is not compatible with requested address pool ${poolName}`
    for (const ip of requested) {
      const err = sharingError(h, ip, taken.holders(ip))
      if (err) return err
    }
    return { ips: requested, pool: pool.meta.name }
  }
  if (named) {
    const ips = fromPool(s, h, named, taken)
    return ips ? { ips, pool: named.meta.name } : `no available IPs in pool ${poolName}`
  }
  const pinned = pools.filter((p) => p.autoAssign && pinnedTo(p, s)).sort(priorityOrder)
  const others = pools
    .filter((p) => p.autoAssign && !p.serviceAllocation)
    .sort((a, b) => (a.meta.name < b.meta.name ? -1 : 1))
  for (const pool of [...pinned, ...others]) {
    const ips = fromPool(s, h, pool, taken)
    if (ips) return { ips, pool: pool.meta.name }
  }
  return 'no available IPs'
}

function requestKey(s: Service): string {
  return `${annotation(s, 'loadBalancerIPs') ?? ''}|${s.spec.loadBalancerIP ?? ''}|${annotation(s, 'address-pool') ?? ''}|${annotation(s, 'allow-shared-ip') ?? ''}`
}

/** What `previous` remembered of a Service's request, to know whether a kept allocation is still what it asked. */
const requestOf = new WeakMap<LoadBalancerAllocation, string>()

export function allocateLoadBalancers(
  services: readonly Service[],
  pools: readonly IPAddressPool[],
  previous: LoadBalancerAllocationMap | null,
  loadBalancerClass: string | null = null,
): Map<string, LoadBalancerAllocation> {
  const out = new Map<string, LoadBalancerAllocation>()
  const taken = new Assignments()
  const lbs = services
    .filter(
      (s) =>
        s.spec.type === 'LoadBalancer' &&
        (s.spec.loadBalancerClass === null || s.spec.loadBalancerClass === loadBalancerClass),
    )
    .sort((a, b) => (objectKey(a.meta) < objectKey(b.meta) ? -1 : 1))

  // 1. Sticky: keep what a Service had while its pool, request and sharing rules still allow it. Existing allocations
  //    are never moved to make room for another Service.
  const rest: Service[] = []
  for (const s of lbs) {
    const key = objectKey(s.meta)
    const prev = previous?.get(key)
    const h = holderOf(s)
    const pool = prev?.pool ? pools.find((p) => p.meta.name === prev.pool) : undefined
    if (
      prev &&
      prev.ips.length > 0 &&
      requestOf.get(prev) === requestKey(s) &&
      prev.ips.every((ip) => sharingError(h, ip, taken.holders(ip)) === null)
    ) {
      for (const ip of prev.ips) taken.add(ip, h)
      const stale = !pool || !prev.ips.every((ip) => inPool(pool, ip))
      const kept = stale === prev.stale ? prev : { ...prev, stale }
      requestOf.set(kept, requestKey(s))
      out.set(key, kept)
    } else rest.push(s)
  }
  // 2. Then Services that request addresses, then the others, each group in namespace/name order.
  const requesting = rest.filter((s) => requestedIps(s).ips !== null || requestedIps(s).error !== null)
  const auto = rest.filter((s) => !requesting.includes(s))
  for (const s of [...requesting, ...auto]) {
    const key = objectKey(s.meta)
    const result = allocateOne(s, pools, taken)
    let alloc: LoadBalancerAllocation
    if (typeof result === 'string') {
      const pending = `Failed to allocate IP for "${key}": ${result}`
      const prev = previous?.get(key)
      // Still pending for the same reason: the same object, so model/build-snapshot.ts sees no change.
      alloc =
        prev && prev.ips.length === 0 && prev.pending === pending && requestOf.get(prev) === requestKey(s)
          ? prev
          : { ips: [], pool: null, pending, stale: false }
    } else {
      const h = holderOf(s)
      for (const ip of result.ips) taken.add(ip, h)
      alloc = { ips: result.ips, pool: result.pool, pending: null, stale: false }
    }
    requestOf.set(alloc, requestKey(s))
    out.set(key, alloc)
  }
  return out
}
