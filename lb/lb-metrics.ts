// Metrics of the L4 balancer, per Service (label "service" = namespace/name).

import { Counter, Gauge, type Registry } from 'prom-client'

export interface LbMetrics {
  readonly connections: Counter<'service' | 'protocol'>
  readonly active: Gauge<'service' | 'protocol'>
  readonly bytes: Counter<'service' | 'direction'>
  readonly connectFailures: Counter<'service'>
  readonly refused: Counter<'service'>
  readonly affinityEntries: Gauge<'service'>
  readonly poolAddresses: Gauge<'pool' | 'state'>
}

export function lbMetrics(registry: Registry): LbMetrics {
  const registers = [registry]
  return {
    connections: new Counter({
      name: 'meshlet_lb_connections_total',
      help: 'Accepted TCP connections and new UDP flows',
      labelNames: ['service', 'protocol'] as const,
      registers,
    }),
    active: new Gauge({
      name: 'meshlet_lb_active_connections',
      help: 'Open TCP connections and live UDP flows',
      labelNames: ['service', 'protocol'] as const,
      registers,
    }),
    bytes: new Counter({
      name: 'meshlet_lb_bytes_total',
      help: 'Bytes forwarded; direction "upstream" is client to endpoint',
      labelNames: ['service', 'direction'] as const,
      registers,
    }),
    connectFailures: new Counter({
      name: 'meshlet_lb_connect_failures_total',
      help: 'Failed dials to endpoints (each retry counts)',
      labelNames: ['service'] as const,
      registers,
    }),
    refused: new Counter({
      name: 'meshlet_lb_refused_total',
      help: 'Client connections reset because every dial failed',
      labelNames: ['service'] as const,
      registers,
    }),
    affinityEntries: new Gauge({
      name: 'meshlet_lb_affinity_entries',
      help: 'ClientIP session affinity entries',
      labelNames: ['service'] as const,
      registers,
    }),
    poolAddresses: new Gauge({
      name: 'meshlet_lb_pool_addresses',
      help: 'IPAddressPool addresses by state (assigned, available)',
      labelNames: ['pool', 'state'] as const,
      registers,
    }),
  }
}

/** The labelled series one Service port writes on its hot paths, resolved once so no packet hashes label sets. */
export interface PortMetrics {
  readonly tcpConnections: Counter.Internal
  readonly tcpActive: Gauge.Internal<'service' | 'protocol'>
  readonly udpFlows: Counter.Internal
  readonly udpActive: Gauge.Internal<'service' | 'protocol'>
  readonly bytesUpstream: Counter.Internal
  readonly bytesDownstream: Counter.Internal
  readonly connectFailures: Counter.Internal
  readonly refused: Counter.Internal
}

export function portMetrics(m: LbMetrics, service: string): PortMetrics {
  return {
    tcpConnections: m.connections.labels(service, 'TCP'),
    tcpActive: m.active.labels(service, 'TCP'),
    udpFlows: m.connections.labels(service, 'UDP'),
    udpActive: m.active.labels(service, 'UDP'),
    bytesUpstream: m.bytes.labels(service, 'upstream'),
    bytesDownstream: m.bytes.labels(service, 'downstream'),
    connectFailures: m.connectFailures.labels(service),
    refused: m.refused.labels(service),
  }
}
