// LoadBalancer address allocation with MetalLB's semantics (specs/l4-health.md §5).
// First version: lowest free address of the first auto-assign pool; the lb issue completes the rules
// (annotations, sharing, avoidBuggyIPs, priorities, ranges).

import type { IPAddressPool, Service } from './objects.ts'
import { objectKey } from './objects.ts'
import { bigIntToIp, parseCidr } from './ip.ts'

export interface LoadBalancerAllocation {
  readonly ips: readonly string[]
  readonly pool: string | null
  /** MetalLB's reason when no address could be given. */
  readonly pending: string | null
}

export type LoadBalancerAllocationMap = ReadonlyMap<string, LoadBalancerAllocation>

function* poolAddresses(pool: IPAddressPool): Generator<string> {
  for (const a of pool.addresses) {
    const cidr = parseCidr(a)
    if (!cidr) continue
    for (let i = 0n; i < cidr.size && i < 65536n; i++) yield bigIntToIp(cidr.base + i, cidr.family)
  }
}

export function allocateLoadBalancers(
  services: readonly Service[],
  pools: readonly IPAddressPool[],
  previous: LoadBalancerAllocationMap | null,
): Map<string, LoadBalancerAllocation> {
  const out = new Map<string, LoadBalancerAllocation>()
  const used = new Set<string>()
  const lbs = services.filter((s) => s.spec.type === 'LoadBalancer').sort((a, b) => (objectKey(a.meta) < objectKey(b.meta) ? -1 : 1))
  for (const s of lbs) for (const ip of previous?.get(objectKey(s.meta))?.ips ?? []) used.add(ip)
  for (const s of lbs) {
    const key = objectKey(s.meta)
    const prev = previous?.get(key)
    if (prev && prev.ips.length > 0) {
      out.set(key, prev)
      continue
    }
    let given: LoadBalancerAllocation | null = null
    for (const pool of pools) {
      if (!pool.autoAssign) continue
      for (const ip of poolAddresses(pool)) {
        if (used.has(ip)) continue
        used.add(ip)
        given = { ips: [ip], pool: pool.meta.name, pending: null }
        break
      }
      if (given) break
    }
    out.set(key, given ?? { ips: [], pool: null, pending: 'no available IPs' })
  }
  return out
}
