// Per-pool statistics for /status and /metrics (specs/l4-health.md §5.5), and whether any L2Advertisement covers the
// pool (MetalLB allocates from an unadvertised pool but never announces it: say so).

import type { Snapshot } from '../model/snapshot.ts'
import type { IPAddressPool, LabelSelector } from '../model/objects.ts'
import { poolCapacity } from '../model/lb-allocator.ts'
import type { LbErrorCode } from './errors.ts'

export interface PoolUsage {
  readonly pool: string
  readonly capacity: number
  readonly assigned: number
  readonly assignedIPv4: number
  readonly assignedIPv6: number
  readonly advertised: boolean
  readonly pending: readonly PendingService[]
}

/** A LoadBalancer Service without an address: MetalLB's event text, and the code to branch on. */
export interface PendingService {
  readonly service: string
  readonly code: LbErrorCode
  readonly reason: string
}

/**
 * The code of a pending reason. The allocator (model/lb-allocator.ts) keeps MetalLB's event texts word for word, so
 * users can search them; its exhaustion texts are "no available IPs" and "no available IPs in pool NAME". Every
 * other reason is a request the pools cannot honour (an address outside them, an unknown pool, a sharing conflict).
 */
export function pendingCode(reason: string): LbErrorCode {
  return reason.includes(': no available IPs') ? 'MLT_LB_POOL_EXHAUSTED' : 'MLT_LB_ADDRESS_REQUEST'
}

function matches(sel: LabelSelector, labels: Readonly<Record<string, string>>): boolean {
  return Object.entries(sel.matchLabels).every(([k, v]) => labels[k] === v)
}

function advertised(s: Snapshot, pool: IPAddressPool): boolean {
  return s.l2Advertisements.some(
    (ad) =>
      (ad.ipAddressPools.length === 0 && ad.ipAddressPoolSelectors.length === 0) ||
      ad.ipAddressPools.includes(pool.meta.name) ||
      ad.ipAddressPoolSelectors.some((sel) => matches(sel, pool.meta.labels)),
  )
}

export function poolUsage(s: Snapshot): PoolUsage[] {
  const pending = s.services
    .filter((svc) => svc.loadBalancerPending !== null)
    .map((svc) => ({ service: svc.key, code: pendingCode(svc.loadBalancerPending!), reason: svc.loadBalancerPending! }))
  return s.pools.map((pool) => {
    const cap = poolCapacity(pool)
    let v4 = 0
    let v6 = 0
    for (const svc of s.services) {
      if (svc.loadBalancerPool !== pool.meta.name) continue
      for (const ip of svc.loadBalancerIPs)
        if (ip.includes(':')) v6++
        else v4++
    }
    return {
      pool: pool.meta.name,
      capacity: Number(cap.v4 + cap.v6),
      assigned: v4 + v6,
      assignedIPv4: v4,
      assignedIPv6: v6,
      advertised: advertised(s, pool),
      pending,
    }
  })
}
