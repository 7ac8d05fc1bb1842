// The dashboard at /ui (issue 19): one page (admin/ui/index.html + app.js, plain HTML/JS, no build step, nothing from
// a CDN) fed by Server-Sent Events at /ui/events. The server sends the whole view once a second while anyone watches:
// Services with addresses and endpoints (ready / not ready / ejected, with the readiness probe's last message), Ingress
// routes, LoadBalancer pools, listeners, configuration errors with file and field, and per-Service rates computed
// from the metrics meshlet already keeps. One view is built per tick whatever the number of viewers, and viewers are
// capped, so the page costs the planes nothing they would not pay for /status.

import { readFileSync } from 'node:fs'
import type { ServerResponse } from 'node:http'
import type { Registry } from 'prom-client'
import type { Plane } from '../model/plane.ts'
import type { Snapshot } from '../model/snapshot.ts'

/** Seconds between two views pushed to the page: the "within 3 s" a change must show in, with room. */
const TICK_MS = 1000
/** Open event streams at most: the admin port is on loopback, but a runaway tab must not pile up work. */
const MAX_VIEWERS = 32

const asset = (name: string) => readFileSync(new URL(`./ui/${name}`, import.meta.url), 'utf8')
/** The page and its script, read once: they ship with meshlet. */
export const UI_FILES: Readonly<Record<string, { type: string; body: string }>> = {
  '/ui': { type: 'text/html; charset=utf-8', body: asset('index.html') },
  '/ui/': { type: 'text/html; charset=utf-8', body: asset('index.html') },
  '/ui/app.js': { type: 'text/javascript; charset=utf-8', body: asset('app.js') },
}

export interface DashboardSources {
  readonly snapshot: () => Snapshot | null
  readonly planes: () => readonly Plane[]
  readonly metrics: Registry
  readonly ready: () => boolean
  readonly admin: () => { address: string; port: number } | null
}

interface ProbeJson {
  kind: string
  lastMessage?: string | null
  lastResult?: string | null
  state?: string
}
interface HealthPodJson {
  pod: string
  reason?: string | null
  containers?: { name: string; probes?: ProbeJson[] }[]
}

/** Counter totals by Service, from one metric's series (label `service`, "ns/name" or "ns/name:port"). */
async function totalsByService(metrics: Registry, name: string): Promise<Map<string, number>> {
  const out = new Map<string, number>()
  const metric = metrics.getSingleMetric(name) as { get?: () => unknown } | undefined
  if (!metric || typeof metric.get !== 'function') return out
  const data = (await metric.get()) as { values?: { labels: Record<string, unknown>; value: number }[] }
  for (const v of data.values ?? []) {
    const raw = v.labels.service
    if (typeof raw !== 'string' || raw === '') continue
    const colon = raw.indexOf(':')
    const key = colon === -1 ? raw : raw.slice(0, colon)
    out.set(key, (out.get(key) ?? 0) + v.value)
  }
  return out
}

export class Dashboard {
  readonly #src: DashboardSources
  readonly #viewers = new Set<ServerResponse>()
  #timer: NodeJS.Timeout | null = null
  /** The counters at the previous tick, for rates: metric → Service → total, and when. */
  #last: { at: number; totals: Map<string, Map<string, number>> } | null = null

  constructor(src: DashboardSources) {
    this.#src = src
  }

  /** Starts an event stream: a view at once, then one per tick. false when too many are open (the caller sends 503). */
  subscribe(res: ServerResponse): boolean {
    if (this.#viewers.size >= MAX_VIEWERS) return false
    res.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      'x-content-type-options': 'nosniff',
    })
    res.write('retry: 1000\n\n')
    this.#viewers.add(res)
    res.on('close', () => {
      this.#viewers.delete(res)
      if (this.#viewers.size === 0 && this.#timer) {
        clearInterval(this.#timer)
        this.#timer = null
        this.#last = null
      }
    })
    void this.#push([res])
    this.#timer ??= setInterval(() => void this.#push([...this.#viewers]), TICK_MS)
    return true
  }

  close(): void {
    if (this.#timer) clearInterval(this.#timer)
    this.#timer = null
    for (const v of this.#viewers) v.destroy()
    this.#viewers.clear()
  }

  async #push(to: readonly ServerResponse[]): Promise<void> {
    let line: string
    try {
      line = `data: ${JSON.stringify(await this.view())}\n\n`
    } catch (err) {
      line = `event: failure\ndata: ${JSON.stringify((err as Error).message)}\n\n`
    }
    for (const res of to) if (!res.destroyed) res.write(line)
  }

  /** The whole view: what the page renders. Also what the tests read. */
  async view(): Promise<unknown> {
    const s = this.#src.snapshot()
    const planes = new Map<string, Record<string, unknown>>()
    for (const p of this.#src.planes()) {
      try {
        planes.set(p.name, { ready: p.ready(), ...(p.status() as Record<string, unknown>) })
      } catch (err) {
        planes.set(p.name, { ready: p.ready(), error: (err as Error).message })
      }
    }
    const rates = await this.#rates()
    const healthPods = new Map<string, HealthPodJson>()
    for (const hp of (planes.get('health')?.pods as HealthPodJson[] | undefined) ?? []) healthPods.set(hp.pod, hp)
    const probeMessage = (pod: string | null | undefined): string | null => {
      if (!pod) return null
      const hp = healthPods.get(pod)
      if (!hp) return null
      for (const c of hp.containers ?? [])
        for (const p of c.probes ?? []) if (p.kind === 'readiness' && p.lastMessage) return p.lastMessage
      return hp.reason ?? null
    }
    const services = (s?.services ?? []).map((svc) => {
      const seen = new Set<string>()
      const endpoints: unknown[] = []
      for (const port of svc.ports) {
        for (const e of port.endpoints) {
          const id = `${e.ip}:${e.port}`
          if (seen.has(id)) continue
          seen.add(id)
          const ejected = s!.ejected[`${svc.key}|${e.ip}|${e.port}`]
          endpoints.push({
            address: id,
            pod: e.pod ?? null,
            state: ejected ? 'ejected' : e.ready ? 'ready' : 'not ready',
            terminating: e.terminating,
            message: ejected ? JSON.stringify(ejected) : probeMessage(e.pod),
          })
        }
      }
      return {
        key: svc.key,
        type: svc.service.spec.type,
        clusterIPs: svc.headless ? ['None'] : svc.clusterIPs,
        loadBalancerIPs: svc.loadBalancerIPs,
        pending: svc.loadBalancerPending,
        ports: svc.ports.map((p) => `${p.port}${p.nodePort ? `:${p.nodePort}` : ''}/${p.protocol}`),
        endpoints,
        requestsPerSecond: rates.requests.get(svc.key) ?? 0,
        connectionsPerSecond: rates.connections.get(svc.key) ?? 0,
        warnings: svc.warnings,
      }
    })
    const proxy = planes.get('proxy')
    const lb = planes.get('lb')
    const dns = planes.get('dns')
    const listeners: { name: string; address: string; port: number; state: string; error: string | null }[] = []
    const admin = this.#src.admin()
    if (admin) listeners.push({ name: 'admin', ...admin, state: 'listening', error: null })
    for (const l of (dns?.listeners as { listener: string; address: string; port: number }[] | undefined) ?? [])
      listeners.push({
        name: l.listener === 'dns' ? 'dns' : `dns ${l.listener}`,
        address: l.address,
        port: l.port,
        state: 'listening',
        error: null,
      })
    const proxyListeners = (proxy?.listeners ?? {}) as Record<
      string,
      { address: string | null; port: number | null; state: string; error: string | null }
    >
    for (const [name, l] of Object.entries(proxyListeners))
      listeners.push({ name, address: l.address ?? '', port: l.port ?? 0, state: l.state, error: l.error })
    type LbListener = { protocol: string; address: string; port: number; kind: string; state: string; error?: string }
    const lbServices = (lb?.services ?? {}) as Record<string, { listeners: LbListener[] }[]>
    for (const [svc, ports] of Object.entries(lbServices))
      for (const port of ports)
        for (const l of port.listeners)
          listeners.push({
            name: `${l.kind} ${svc} ${l.protocol}`,
            address: l.address,
            port: l.port,
            state: l.state,
            error: l.error ?? null,
          })
    return {
      ready: this.#src.ready(),
      version: s?.version ?? null,
      services,
      routes: proxy?.routes ?? [],
      ingresses: proxy?.ingresses ?? [],
      pools: lb?.pools ?? [],
      listeners,
      errors: (s?.errors ?? []).map((e) => ({
        file: e.source?.file ?? null,
        doc: e.source?.doc ?? null,
        object: e.object,
        field: e.path,
        code: e.code,
        message: e.message,
      })),
      dnsQueriesPerSecond: rates.dns,
    }
  }

  /** Per-Service rates over the last tick from the counters the planes keep; zero on the first tick. */
  async #rates(): Promise<{ requests: Map<string, number>; connections: Map<string, number>; dns: number }> {
    const now = Date.now()
    const totals = new Map<string, Map<string, number>>([
      ['requests', await totalsByService(this.#src.metrics, 'meshlet_proxy_requests_total')],
      ['connections', await totalsByService(this.#src.metrics, 'meshlet_lb_connections_total')],
    ])
    const dnsMetric = this.#src.metrics.getSingleMetric('meshlet_dns_queries_total') as
      { get?: () => Promise<{ values: { value: number }[] }> } | undefined
    const dnsTotal = dnsMetric?.get ? (await dnsMetric.get()).values.reduce((a, v) => a + v.value, 0) : 0
    totals.set('dns', new Map([['', dnsTotal]]))
    const last = this.#last
    this.#last = { at: now, totals }
    const rate = (name: string): Map<string, number> => {
      const out = new Map<string, number>()
      const before = last?.totals.get(name)
      const dt = last ? (now - last.at) / 1000 : 0
      if (!before || dt <= 0) return out
      for (const [k, v] of totals.get(name)!) out.set(k, Math.max(0, (v - (before.get(k) ?? 0)) / dt))
      return out
    }
    return { requests: rate('requests'), connections: rate('connections'), dns: rate('dns').get('') ?? 0 }
  }
}
