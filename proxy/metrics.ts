// Metrics per Ingress path and Service. The request path only bumps plain numbers on a RouteStats object the route
// table holds (prom-client's labels().inc() hashes the label set on every call); the registered metrics read those
// objects when /metrics is scraped. RouteStats outlive route tables, so counters survive reloads.

import type { Registry } from 'prom-client'

/** Latency buckets, seconds. */
export const BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

export class RouteStats {
  readonly labels: { ingress: string; path: string; service: string }
  /** Responses by status class: index 1..5 = 1xx..5xx. */
  readonly byClass = [0, 0, 0, 0, 0, 0]
  readonly buckets = new Float64Array(BUCKETS.length)
  sum = 0
  count = 0
  connectErrors = 0

  constructor(ingress: string, path: string, service: string) {
    this.labels = { ingress, path, service }
  }

  observe(status: number, seconds: number): void {
    const c = (status / 100) | 0
    if (c >= 1 && c <= 5) this.byClass[c]!++
    this.sum += seconds
    this.count++
    for (let i = 0; i < BUCKETS.length; i++) {
      if (seconds <= BUCKETS[i]!) {
        this.buckets[i]!++
        break
      }
    }
  }
}

type Value = { labels: Record<string, string | number>; value: number; metricName?: string }

/** A metric read from RouteStats at scrape time (the shape prom-client's Registry expects of a metric). */
class StatsMetric {
  readonly name: string
  readonly help: string
  readonly type: 'counter' | 'histogram'
  readonly aggregator = 'sum'
  readonly #read: () => Value[]
  constructor(name: string, help: string, type: 'counter' | 'histogram', read: () => Value[]) {
    this.name = name
    this.help = help
    this.type = type
    this.#read = read
  }
  get(): { name: string; help: string; type: string; values: Value[]; aggregator: string } {
    return { name: this.name, help: this.help, type: this.type, values: this.#read(), aggregator: this.aggregator }
  }
  reset(): void {}
}

export class ProxyMetrics {
  readonly #stats = new Map<string, RouteStats>()
  /** Requests answered without a route (400, 404, 405): by status. */
  readonly unrouted = new Map<number, number>()

  constructor(registry: Registry) {
    const classes = ['', '1xx', '2xx', '3xx', '4xx', '5xx']
    const reg = (m: StatsMetric) => registry.registerMetric(m as never)
    reg(
      new StatsMetric(
        'meshlet_proxy_requests_total',
        'Requests by Ingress path, Service and status class',
        'counter',
        () => {
          const out: Value[] = []
          for (const s of this.#stats.values()) {
            for (let c = 1; c <= 5; c++) {
              if (s.byClass[c]! > 0) out.push({ labels: { ...s.labels, code: classes[c]! }, value: s.byClass[c]! })
            }
          }
          for (const [status, n] of this.unrouted) {
            out.push({
              labels: { ingress: '', path: '', service: '', code: classes[(status / 100) | 0] ?? 'other' },
              value: n,
            })
          }
          return out
        },
      ),
    )
    reg(
      new StatsMetric(
        'meshlet_proxy_request_duration_seconds',
        'Time from request to end of response, by Ingress path and Service',
        'histogram',
        () => {
          const out: Value[] = []
          for (const s of this.#stats.values()) {
            if (s.count === 0) continue
            let acc = 0
            for (let i = 0; i < BUCKETS.length; i++) {
              acc += s.buckets[i]!
              out.push({
                labels: { ...s.labels, le: BUCKETS[i]! },
                value: acc,
                metricName: 'meshlet_proxy_request_duration_seconds_bucket',
              })
            }
            out.push({
              labels: { ...s.labels, le: '+Inf' },
              value: s.count,
              metricName: 'meshlet_proxy_request_duration_seconds_bucket',
            })
            out.push({ labels: s.labels, value: s.sum, metricName: 'meshlet_proxy_request_duration_seconds_sum' })
            out.push({ labels: s.labels, value: s.count, metricName: 'meshlet_proxy_request_duration_seconds_count' })
          }
          return out
        },
      ),
    )
    reg(
      new StatsMetric(
        'meshlet_proxy_upstream_connect_errors_total',
        'Failed connections to endpoints, by Ingress path and Service',
        'counter',
        () => {
          const out: Value[] = []
          for (const s of this.#stats.values())
            if (s.connectErrors > 0) out.push({ labels: s.labels, value: s.connectErrors })
          return out
        },
      ),
    )
  }

  /** The stats object for one (Ingress, path, Service), created once and kept across route tables. */
  stats(ingress: string, path: string, service: string): RouteStats {
    const key = `${ingress}\u0000${path}\u0000${service}`
    let s = this.#stats.get(key)
    if (!s) {
      s = new RouteStats(ingress, path, service)
      this.#stats.set(key, s)
    }
    return s
  }

  countUnrouted(status: number): void {
    this.unrouted.set(status, (this.unrouted.get(status) ?? 0) + 1)
  }
}
