// health/'s Prometheus metrics, registered once on the process registry (prefix meshlet_health_).

import { Counter, Gauge, Histogram, type Registry } from 'prom-client'

export interface HealthMetrics {
  /** Probe attempts by kind (readiness, liveness, startup), handler type (httpGet, tcpSocket, exec, grpc) and result. */
  readonly results: Counter<'kind' | 'type' | 'result'>
  readonly duration: Histogram<'kind' | 'type'>
  /** Virtual restarts after a liveness or startup failure. */
  readonly restarts: Counter<'reason'>
  readonly ejections: Counter<'service'>
  readonly ejected: Gauge
  readonly workers: Gauge
}

export function registerHealthMetrics(registry: Registry): HealthMetrics {
  return {
    results: new Counter({
      name: 'meshlet_health_probe_results_total',
      help: 'Probe attempts by probe kind, handler type and result (success, warning, failure).',
      labelNames: ['kind', 'type', 'result'],
      registers: [registry],
    }),
    duration: new Histogram({
      name: 'meshlet_health_probe_duration_seconds',
      help: 'Duration of one probe attempt (connect to answer, or the command run), by probe kind and handler type.',
      labelNames: ['kind', 'type'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    restarts: new Counter({
      name: 'meshlet_health_virtual_restarts_total',
      help: 'Virtual restarts of Pods whose liveness or startup probe failed (reason: liveness or startup).',
      labelNames: ['reason'],
      registers: [registry],
    }),
    ejections: new Counter({
      name: 'meshlet_health_ejections_total',
      help: 'Passive (outlier) ejections of endpoints, by Service.',
      labelNames: ['service'],
      registers: [registry],
    }),
    ejected: new Gauge({
      name: 'meshlet_health_ejected_endpoints',
      help: 'Endpoints currently taken out by passive ejection.',
      registers: [registry],
    }),
    workers: new Gauge({
      name: 'meshlet_health_probe_workers',
      help: 'Probe workers running (one per Pod, container and probe kind).',
      registers: [registry],
    }),
  }
}
