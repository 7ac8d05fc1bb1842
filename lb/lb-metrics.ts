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
    connections: new Counter({ name: 'meshlet_lb_connections_total', help: 'Accepted TCP connections and new UDP flows', labelNames: ['service', 'protocol'] as const, registers }),
    active: new Gauge({ name: 'meshlet_lb_active_connections', help: 'Open TCP connections and live UDP flows', labelNames: ['service', 'protocol'] as const, registers }),
    bytes: new Counter({ name: 'meshlet_lb_bytes_total', help: 'Bytes forwarded; direction "upstream" is client to endpoint', labelNames: ['service', 'direction'] as const, registers }),
    connectFailures: new Counter({ name: 'meshlet_lb_connect_failures_total', help: 'Failed dials to endpoints (each retry counts)', labelNames: ['service'] as const, registers }),
    refused: new Counter({ name: 'meshlet_lb_refused_total', help: 'Client connections reset because every dial failed', labelNames: ['service'] as const, registers }),
    affinityEntries: new Gauge({ name: 'meshlet_lb_affinity_entries', help: 'ClientIP session affinity entries', labelNames: ['service'] as const, registers }),
    poolAddresses: new Gauge({ name: 'meshlet_lb_pool_addresses', help: 'IPAddressPool addresses by state (assigned, available)', labelNames: ['pool', 'state'] as const, registers }),
  }
}
