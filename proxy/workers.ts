// The main-thread side of --workers N (N ≥ 2), issue 16: the http and https Ingress listeners served by N worker
// threads (proxy/worker-main.ts), each a whole ProxyPlane on its own event loop, sharing the ports with SO_REUSEPORT
// (the first worker binds, possibly port 0; the others join its ports; the kernel spreads connections by hash). The
// pattern is dns/workers.ts's: every Snapshot is posted to each worker as a structured clone; log lines come back and
// are written through the plane's logger; close() drains the workers and ends the threads, so the process is still
// the one thing to stop.
//
// Why worker threads and not node:cluster: Snapshots are built once in this process (the Store, etcd, probes) and a
// thread receives them by structured clone without a second copy of the Store; SO_REUSEPORT lets each thread accept
// on its own socket with no hand-over through the main thread (cluster's round-robin costs a hop per connection).
//
// What a worker does not own: health/'s passive ejection (its upstream outcomes come here in batches and are replayed
// into the main thread's reporter); /metrics (at scrape time each worker sends its registry's JSON and prom-client's
// AggregatorRegistry.aggregate adds the series up); /status (the first worker's state, with the counts summed and a
// row per worker).

import { Worker } from 'node:worker_threads'
import {
  AggregatorRegistry,
  type MetricObjectWithValues,
  type MetricValue,
  type Registry,
  type RegistryContentType,
} from 'prom-client'
import type { Logger } from 'pino'
import { publishApplied, publishListener } from '../model/diagnostics.ts'
import type { Plane, PlaneContext } from '../model/plane.ts'
import type { Snapshot } from '../model/snapshot.ts'
import { ProxyError } from './errors.ts'
import { generateSelfSigned } from './tls.ts'
import type { ProxyWorkerInit, ReportRuns } from './worker-protocol.ts'

type MetricsJson = MetricObjectWithValues<MetricValue<string>>[]

type FromWorker =
  | { readonly type: 'listening'; readonly http: number | null; readonly https: number | null }
  | { readonly type: 'failed'; readonly message: string }
  | { readonly type: 'applied'; readonly version: number; readonly error: string | null }
  | { readonly type: 'status'; readonly status: WorkerStatus; readonly requests: number; readonly ready: boolean }
  | { readonly type: 'metrics'; readonly id: number; readonly json: MetricsJson }
  | { readonly type: 'report'; readonly runs: ReportRuns }
  | { readonly type: 'log'; readonly line: string }
  | { readonly type: 'closed' }

/** The parts of ProxyPlane.status() this file sums across workers; the rest is shown as the first worker has it. */
interface WorkerStatus {
  readonly snapshot: number
  readonly listeners: Record<string, { connections: { open: number; closedForRoom: number; refused: number } | null }>
  readonly unrouted: Record<string, number>
  readonly inflight: number
  readonly tunnels: number
  readonly [k: string]: unknown
}

/** How long a scrape waits for a worker's metrics; a worker that does not answer is left out of that scrape. */
const METRICS_TIMEOUT_MS = 1000
/** Scrapes within this long share one collection (one /metrics request reads every proxy metric). */
const METRICS_REUSE_MS = 100
/** A failure run longer than this is replayed as this many: past any consecutive-failures threshold. */
const MAX_REPLAYED_FAILURES = 1000

const LEVELS: Record<number, 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal'> = {
  10: 'trace',
  20: 'debug',
  30: 'info',
  40: 'warn',
  50: 'error',
  60: 'fatal',
}

class Entry {
  readonly index: number
  readonly worker: Worker
  listening = false
  /** Version of the last Snapshot applied; 0 before the first. */
  applied = 0
  error: string | null = null
  exited = false
  status: WorkerStatus | null = null
  requests = 0
  readonly closed: Promise<void>

  constructor(index: number, worker: Worker) {
    this.index = index
    this.worker = worker
    this.closed = new Promise((resolve) => worker.once('exit', () => resolve()))
  }
}

class ProxyWorkers implements Plane {
  readonly name = 'proxy'
  readonly #ctx: PlaneContext
  readonly #log: Logger
  readonly #entries: Entry[] = []
  readonly #metricWaiters = new Map<number, (json: MetricsJson | null) => void>()
  #nextMetricsId = 1
  #collection: { at: number; registry: Promise<Registry<RegistryContentType>> } | null = null
  #posted = 0
  #postedAt = 0
  #closing = false
  #unsubscribe: (() => void) | null = null
  #pem: ProxyWorkerInit['pem'] = null
  ports: { http: number | null; https: number | null } = { http: null, https: null }

  constructor(ctx: PlaneContext) {
    this.#ctx = ctx
    this.#log = ctx.log
  }

  async start(n: number): Promise<void> {
    const { options } = this.#ctx
    if (options.https) this.#pem = await generateSelfSigned()
    // Every thread starts (and loads its modules) at once; the first binds the configured ports, then the others
    // are told the ports it got.
    const started = Array.from({ length: n }, (_, i) => this.#spawn(i))
    for (const p of started) p.catch(() => {}) // awaited below; a worker failing early must not go unhandled
    this.#entries[0]!.worker.postMessage({ type: 'listen', http: options.http, https: options.https })
    this.ports = await started[0]!
    const at = (a: typeof options.http, p: number | null) => (a && p !== null ? { host: a.host, port: p } : a)
    const listen = {
      type: 'listen',
      http: at(options.http, this.ports.http),
      https: at(options.https, this.ports.https),
    }
    for (const e of this.#entries.slice(1)) e.worker.postMessage(listen)
    await Promise.all(started)
    for (const [name, a, p] of [
      ['http', options.http, this.ports.http],
      ['https', options.https, this.ports.https],
    ] as const)
      if (a && p !== null) {
        this.#log.info({ listener: name, address: a.host, port: p, workers: n }, 'listening')
        publishListener('proxy', name, a.host, p, null)
      }
    await this.#registerMetrics()
    this.#unsubscribe = this.#ctx.store.subscribe((s) => this.#post(s))
  }

  #spawn(index: number): Promise<{ http: number | null; https: number | null }> {
    const init: ProxyWorkerInit = {
      index,
      options: { ...this.#ctx.options, proxyWorkers: 1 },
      pem: this.#pem,
      logLevel: this.#log.level,
    }
    const worker = new Worker(new URL('./worker-main.ts', import.meta.url), {
      workerData: init,
      name: `proxy-${index}`,
    })
    const e = new Entry(index, worker)
    this.#entries.push(e)
    return new Promise((resolve, reject) => {
      worker.on('message', (m: FromWorker) => {
        switch (m.type) {
          case 'listening':
            e.listening = true
            resolve({ http: m.http, https: m.https })
            break
          case 'failed':
            reject(new ProxyError('MLT_PROXY_LISTEN', `proxy worker ${index}: ${m.message}`))
            break
          case 'applied':
            e.applied = m.version
            e.error = m.error
            if (m.version === this.#posted && this.#entries.every((x) => x.exited || x.applied >= m.version))
              publishApplied('proxy', m.version, this.#postedAt)
            break
          case 'status':
            e.status = m.status
            e.requests = m.requests
            break
          case 'metrics':
            this.#metricWaiters.get(m.id)?.(m.json)
            break
          case 'report':
            this.#replay(m.runs)
            break
          case 'log':
            this.#relayLog(index, m.line)
            break
          case 'closed':
            void worker.terminate()
            break
        }
      })
      worker.on('error', (err) => {
        this.#log.error({ worker: index, err }, 'proxy worker failed')
        reject(new ProxyError('MLT_PROXY_LISTEN', `proxy worker ${index}: ${err.message}`, { cause: err }))
      })
      worker.on('exit', (code) => {
        e.exited = true
        e.listening = false
        if (!this.#closing)
          this.#log.error(
            { worker: index, code },
            'proxy worker exited; its share of the connections goes to the others',
          )
        reject(new ProxyError('MLT_PROXY_LISTEN', `proxy worker ${index} exited with code ${code}`))
      })
    })
  }

  #post(snapshot: Snapshot): void {
    this.#posted = snapshot.version
    this.#postedAt = performance.now()
    for (const e of this.#entries) this.#postTo(e, snapshot)
  }

  #postTo(e: Entry, snapshot: Snapshot): void {
    if (!e.exited) e.worker.postMessage({ type: 'snapshot', snapshot })
  }

  /** Upstream outcomes from a worker, replayed in order into health/'s reporter. */
  #replay(runs: ReportRuns): void {
    for (const [key, list] of Object.entries(runs)) {
      const [service, ip, port] = key.split('|') as [string, string, string]
      for (const r of list) {
        if (r === 0) this.#ctx.reporter.report(service, ip, Number(port), true)
        else
          for (let i = 0; i < Math.min(r, MAX_REPLAYED_FAILURES); i++)
            this.#ctx.reporter.report(service, ip, Number(port), false)
      }
    }
  }

  #relayLog(index: number, line: string): void {
    try {
      const {
        level,
        msg,
        time: _time,
        pid: _pid,
        hostname: _host,
        ...rest
      } = JSON.parse(line) as Record<string, unknown>
      const name = LEVELS[level as number] ?? 'info'
      this.#log[name]({ worker: index, ...rest }, String(msg ?? ''))
    } catch {
      // not JSON: ignore
    }
  }

  /** One worker's registry as JSON, or null when it is gone or does not answer in time. */
  #metricsOf(e: Entry): Promise<MetricsJson | null> {
    if (e.exited) return Promise.resolve(null)
    const id = this.#nextMetricsId++
    return new Promise((resolve) => {
      const timer = setTimeout(() => done(null), METRICS_TIMEOUT_MS)
      const done = (json: MetricsJson | null) => {
        clearTimeout(timer)
        this.#metricWaiters.delete(id)
        resolve(json)
      }
      this.#metricWaiters.set(id, done)
      e.worker.postMessage({ type: 'metrics', id })
    })
  }

  /** Every worker's series added up (counters and histogram buckets: sum), shared by the scrapes of one moment. */
  #aggregate(): Promise<Registry<RegistryContentType>> {
    const now = performance.now()
    if (this.#collection && now - this.#collection.at < METRICS_REUSE_MS) return this.#collection.registry
    const registry = Promise.all(this.#entries.map((e) => this.#metricsOf(e))).then((all) =>
      AggregatorRegistry.aggregate(all.filter((j): j is MetricsJson => j !== null)),
    )
    this.#collection = { at: now, registry }
    return registry
  }

  /**
   * One metric in the process registry per proxy metric a worker has, reading the aggregate at scrape time. The
   * object has the shape AggregatorRegistry.aggregate itself registers (name, help, type, aggregator, get).
   */
  async #registerMetrics(): Promise<void> {
    const first = await this.#metricsOf(this.#entries[0]!)
    for (const m of first ?? []) {
      const { name, help, type, aggregator } = m
      const relay = {
        name,
        help,
        type,
        aggregator,
        get: async () => {
          const agg = await (await this.#aggregate()).getSingleMetric(name)?.get()
          return agg ?? { name, help, type, aggregator, values: [] }
        },
        reset: () => {},
      }
      this.#ctx.metrics.registerMetric(relay as never)
    }
  }

  ready(): boolean {
    if (this.#posted === 0) return false
    return this.#entries.every((e) => e.listening && !e.exited && e.applied > 0)
  }

  unready(): readonly string[] {
    const out: string[] = []
    if (this.#posted === 0) out.push('proxy: no Snapshot yet')
    for (const e of this.#entries) {
      if (e.exited) out.push(`proxy worker ${e.index}: exited`)
      else if (!e.listening) out.push(`proxy worker ${e.index}: not listening`)
      else if (e.applied === 0) out.push(`proxy worker ${e.index}: no route table yet`)
      else if (e.error) out.push(`proxy worker ${e.index}: ${e.error}`)
    }
    return out
  }

  /** The first worker's /status, its counts summed over every worker, and one row per worker. */
  status(): unknown {
    const base = this.#entries.find((e) => e.status !== null)?.status
    if (!base) return { snapshot: 0, workers: this.#rows() }
    const listeners: Record<string, unknown> = {}
    for (const [name, l] of Object.entries(base.listeners)) {
      let conn: { open: number; closedForRoom: number; refused: number } | null = null
      for (const e of this.#entries) {
        const c = e.status?.listeners[name]?.connections
        if (!c) continue
        conn ??= { open: 0, closedForRoom: 0, refused: 0 }
        conn.open += c.open
        conn.closedForRoom += c.closedForRoom
        conn.refused += c.refused
      }
      listeners[name] = { ...l, connections: conn }
    }
    const unrouted: Record<string, number> = {}
    for (const e of this.#entries)
      for (const [code, n] of Object.entries(e.status?.unrouted ?? {})) unrouted[code] = (unrouted[code] ?? 0) + n
    const sum = (f: (s: WorkerStatus) => number) => this.#entries.reduce((a, e) => a + (e.status ? f(e.status) : 0), 0)
    return {
      ...base,
      // The oldest Snapshot a worker serves.
      snapshot: Math.min(...this.#entries.map((e) => (e.exited ? 0 : e.applied))),
      listeners,
      unrouted,
      inflight: sum((s) => s.inflight),
      tunnels: sum((s) => s.tunnels),
      workers: this.#rows(),
    }
  }

  #rows(): { worker: number; listening: boolean; snapshot: number; requests: number; error: string | null }[] {
    return this.#entries.map((e) => ({
      worker: e.index,
      listening: e.listening && !e.exited,
      snapshot: e.applied,
      // Responses this worker sent (its meshlet_proxy_requests_total), as of its last report (every 0.5 s).
      requests: e.requests,
      error: e.error,
    }))
  }

  /** Each worker stops accepting and drains until `deadline`; then the threads end. */
  async close(deadline: number): Promise<void> {
    this.#closing = true
    this.#unsubscribe?.()
    for (const e of this.#entries) if (!e.exited) e.worker.postMessage({ type: 'close', deadline })
    const wait = Math.max(0, deadline - Date.now()) + 2000
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, wait)))
    await Promise.race([Promise.all(this.#entries.map((e) => e.closed)), timeout])
    clearTimeout(timer)
    await Promise.all(this.#entries.map((e) => (e.exited ? undefined : e.worker.terminate())))
  }
}

/** The proxy plane on `ctx.options.proxyWorkers` worker threads (proxy/index.ts's startProxy picks it for N ≥ 2). */
export async function startProxyWorkers(ctx: PlaneContext): Promise<Plane> {
  const plane = new ProxyWorkers(ctx)
  try {
    await plane.start(ctx.options.proxyWorkers)
  } catch (err) {
    await plane.close(Date.now())
    throw err
  }
  return plane
}
