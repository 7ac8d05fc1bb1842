// Usable endpoint lists per Service port (specs/l4-health.md §2.2, a port of kube-proxy's CategorizeEndpoints),
// and which list a listener uses (§2.3). Computed once per Snapshot, never per connection.

import type { EndpointState, ServiceState } from '../model/snapshot.ts'

export interface UsableLists {
  /** Ready endpoints allowed by topology hints; else serving+terminating ones. */
  readonly cluster: readonly EndpointState[]
  /** This node's ready endpoints; else this node's serving+terminating ones. */
  readonly local: readonly EndpointState[]
  readonly hasAny: boolean
}

type HintsMode = 'PreferSameNode' | 'PreferSameZone' | ''

function hintsMode(ready: readonly EndpointState[], node: string, zone: string | null): HintsMode {
  if (ready.length === 0) return ''
  if (ready.every((e) => e.forNodes !== null) && ready.some((e) => e.forNodes!.includes(node))) return 'PreferSameNode'
  if (zone !== null && ready.every((e) => e.forZones !== null) && ready.some((e) => e.forZones!.includes(zone))) {
    return 'PreferSameZone'
  }
  return ''
}

export function usableLists(endpoints: readonly EndpointState[], node: string, zone: string | null): UsableLists {
  const ready = endpoints.filter((e) => e.ready)
  const mode = hintsMode(ready, node, zone)
  let cluster: readonly EndpointState[] =
    mode === 'PreferSameNode'
      ? ready.filter((e) => e.forNodes!.includes(node))
      : mode === 'PreferSameZone'
        ? ready.filter((e) => e.forZones!.includes(zone!))
        : ready
  // Topology is ignored in the terminating fallback, as in kube-proxy.
  if (cluster.length === 0) cluster = endpoints.filter((e) => e.serving && e.terminating)
  const localAll = endpoints.filter((e) => e.nodeName !== null && e.nodeName === node)
  let local: readonly EndpointState[] = localAll.filter((e) => e.ready)
  if (local.length === 0) local = localAll.filter((e) => e.serving && e.terminating)
  const hasAny = endpoints.some((e) => e.ready || (e.serving && e.terminating))
  return { cluster, local, hasAny }
}

/** Which list a listener of this kind uses: ClusterIP traffic follows internalTrafficPolicy, the rest external. */
export function listFor(svc: ServiceState, lists: UsableLists, kind: 'cluster' | 'external'): readonly EndpointState[] {
  const policy = kind === 'cluster' ? svc.service.spec.internalTrafficPolicy : svc.service.spec.externalTrafficPolicy
  return policy === 'Local' ? lists.local : lists.cluster
}

/** kube-proxy's health check counts distinct IPs of ready local endpoints across all ports (§3.8). */
export function localReadyIps(svc: ServiceState, node: string): number {
  const ips = new Set<string>()
  for (const p of svc.ports) for (const e of p.endpoints) if (e.ready && e.nodeName === node) ips.add(e.ip)
  return ips.size
}
