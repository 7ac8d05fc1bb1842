// Metrics per Ingress path and Service, through prom-client's documented API. The request path bumps plain numbers
// on a RouteStats object the route table holds (status classes and connect errors: the counters read them in their
// `collect()` at scrape time), and observes its duration on the prom-client histogram with the route's label object
// made once. RouteStats outlive route tables, so counters survive reloads; a route that leaves the table has its
// series removed (`retain`), so removed Ingresses do not stay in /metrics forever.

import { Counter, Histogram, type Registry } from 'prom-client'

/** Latency buckets, seconds. */
export const BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

const CLASSES = ['', '1xx', '2xx', '3xx', '4xx', '5xx']

type RouteLabels = { readonly ingress: string; readonly path: string; readonly service: string }

export class RouteStats {
  readonly labels: RouteLabels
  /** Responses by status class: index 1..5 = 1xx..5xx. */
  readonly byClass = [0, 0, 0, 0, 0, 0]
  connectErrors = 0
  /** Set when its route left every table: a request still in flight on an old table no longer reports. */
  removed = false
  readonly #duration: Histogram<'ingress' | 'path' | 'service'>

  constructor(labels: RouteLabels, duration: Histogram<'ingress' | 'path' | 'service'>) {
    this.labels = labels
    this.#duration = duration
  }

  observe(status: number, seconds: number): void {
    if (this.removed) return
    const c = (status / 100) | 0
    if (c >= 1 && c <= 5) this.byClass[c]!++
    this.#duration.observe(this.labels, seconds)
  }
}

export class ProxyMetrics {
  readonly #stats = new Map<string, RouteStats>()
  /** Requests answered without a route (400, 404, 405): by status. */
  readonly unrouted = new Map<number, number>()
  readonly #duration: Histogram<'ingress' | 'path' | 'service'>

  constructor(registry: Registry) {
    const stats = this.#stats
    const unrouted = this.unrouted
    new Counter({
      name: 'meshlet_proxy_requests_total',
      help: 'Requests by Ingress path, Service and status class',
      labelNames: ['ingress', 'path', 'service', 'code'],
      registers: [registry],
      // Counted on RouteStats (no label hashing per request), copied here when /metrics is read.
      collect() {
        this.reset()
        for (const s of stats.values())
          for (let c = 1; c <= 5; c++)
            if (s.byClass[c]! > 0) this.inc({ ...s.labels, code: CLASSES[c]! }, s.byClass[c]!)
        for (const [status, n] of unrouted)
          this.inc({ ingress: '', path: '', service: '', code: CLASSES[(status / 100) | 0] ?? 'other' }, n)
      },
    })
    new Counter({
      name: 'meshlet_proxy_upstream_connect_errors_total',
      help: 'Failed connections to endpoints, by Ingress path and Service',
      labelNames: ['ingress', 'path', 'service'],
      registers: [registry],
      collect() {
        this.reset()
        for (const s of stats.values()) if (s.connectErrors > 0) this.inc(s.labels, s.connectErrors)
      },
    })
    this.#duration = new Histogram({
      name: 'meshlet_proxy_request_duration_seconds',
      help: 'Time from request to end of response, by Ingress path and Service',
      labelNames: ['ingress', 'path', 'service'],
      buckets: BUCKETS,
      registers: [registry],
    })
  }

  /** The stats object for one (Ingress, path, Service), created once and kept across route tables. */
  stats(ingress: string, path: string, service: string): RouteStats {
    const key = `${ingress}\u0000${path}\u0000${service}`
    let s = this.#stats.get(key)
    if (!s) {
      s = new RouteStats({ ingress, path, service }, this.#duration)
      this.#stats.set(key, s)
    }
    return s
  }

  /** Drops the series of every route not in `live` (the routes of the current table): its Ingress or path is gone. */
  retain(live: ReadonlySet<RouteStats>): void {
    for (const [key, s] of this.#stats) {
      if (live.has(s)) continue
      s.removed = true
      this.#stats.delete(key)
      this.#duration.remove(s.labels)
    }
  }

  countUnrouted(status: number): void {
    this.unrouted.set(status, (this.unrouted.get(status) ?? 0) + 1)
  }
}
