// State of one Service port that outlives Snapshots: its usable lists, its round-robin cursor and its affinity table.
// Every address of the port (ClusterIPs, NodePort, LoadBalancer IPs) shares it, so affinity is keyed by client IP and
// Service port only (specs/l4-health.md §3.3).

import type { EndpointState, ServicePortState, ServiceState } from '../model/snapshot.ts'
import { AffinityTable } from './session-affinity.ts'
import { RoundRobin } from './round-robin.ts'
import { listFor, usableLists, type UsableLists } from './usable-endpoints.ts'
import type { ProxyProtocolVersion } from './proxy-protocol.ts'
import { portMetrics, type LbMetrics, type PortMetrics } from './lb-metrics.ts'

export type ListenerKind = 'cluster' | 'external'

/** UDP flow idle timeouts (conntrack's defaults), overridable per Service by annotation. */
export const UDP_TIMEOUT_SECONDS = 30
export const UDP_STREAM_TIMEOUT_SECONDS = 120

export class PortRuntime {
  readonly key: string
  svc: ServiceState
  port: ServicePortState
  lists: UsableLists = { cluster: [], local: [], hasAny: false }
  readonly rr = new RoundRobin()
  affinity: AffinityTable | null = null
  proxyProtocol: ProxyProtocolVersion | null = null
  udpTimeoutMs = UDP_TIMEOUT_SECONDS * 1000
  udpStreamTimeoutMs = UDP_STREAM_TIMEOUT_SECONDS * 1000
  /** This Service's metric series (the Service key is part of the port key, so it never changes). */
  readonly metrics: PortMetrics

  constructor(key: string, svc: ServiceState, port: ServicePortState, metrics: LbMetrics) {
    this.key = key
    this.svc = svc
    this.port = port
    this.metrics = portMetrics(metrics, svc.key)
  }

  /** Applies a new Snapshot's view of this port; drops affinity entries whose endpoint is no longer usable. */
  update(svc: ServiceState, port: ServicePortState, node: string, zone: string | null): void {
    this.svc = svc
    this.port = port
    this.lists = usableLists(port.endpoints, node, zone)
    const spec = svc.service.spec
    if (spec.sessionAffinity === 'ClientIP') {
      if (!this.affinity) this.affinity = new AffinityTable(spec.affinityTimeoutSeconds)
      this.affinity.timeoutMs = spec.affinityTimeoutSeconds * 1000
      const usable = new Set<string>()
      for (const e of this.lists.cluster) usable.add(`${e.ip}|${e.port}`)
      for (const e of this.lists.local) usable.add(`${e.ip}|${e.port}`)
      this.affinity.retain(usable)
    } else this.affinity = null
    const ann = svc.service.meta.annotations
    const pp = ann['meshlet.io/proxy-protocol']
    this.proxyProtocol = pp === 'v1' || pp === 'v2' ? pp : null
    this.udpTimeoutMs = secondsAnnotation(ann['meshlet.io/udp-timeout-seconds'], UDP_TIMEOUT_SECONDS) * 1000
    this.udpStreamTimeoutMs =
      secondsAnnotation(ann['meshlet.io/udp-stream-timeout-seconds'], UDP_STREAM_TIMEOUT_SECONDS) * 1000
  }

  list(kind: ListenerKind): readonly EndpointState[] {
    return listFor(this.svc, this.lists, kind)
  }

  /** The endpoint for a new connection or flow: the sticky one if fresh and usable, else the next in rotation. */
  pick(kind: ListenerKind, client: string, now: number): EndpointState | null {
    const list = this.list(kind)
    if (this.affinity) {
      const sticky = this.affinity.lookup(client, list, now)
      if (sticky) return sticky
    }
    const ep = this.rr.pick(list)
    if (ep && this.affinity) this.affinity.remember(client, ep, now)
    return ep
  }

  /**
   * After a failed dial: the next endpoint in rotation that this connection has not tried yet; once it has tried
   * every usable endpoint, the plain next one (a new round: the next attempt's longer connect timeout may reach an
   * endpoint that was only slow). The affinity entry is overwritten with it (§3.3).
   */
  retry(kind: ListenerKind, client: string, now: number, tried: readonly EndpointState[]): EndpointState | null {
    const list = this.list(kind)
    const ep = this.rr.pick(list, tried) ?? this.rr.pick(list)
    if (ep && this.affinity) this.affinity.remember(client, ep, now)
    return ep
  }
}

function secondsAnnotation(value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback
  const n = Number(value)
  return Number.isFinite(n) && n > 0 && n <= 86400 ? n : fallback
}

/** Key of a Service port across Snapshots. */
export function portKey(svc: ServiceState, port: ServicePortState): string {
  return `${svc.key}|${port.name}|${port.protocol}|${port.port}`
}
