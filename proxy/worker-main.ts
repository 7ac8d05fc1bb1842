// One proxy worker thread (--workers N ≥ 2): a whole ProxyPlane (route table, endpoint pools, both engines) on its
// own event loop, its http and https listeners bound with SO_REUSEPORT on the ports the first worker got, fed by the
// Snapshots the main thread posts (structured clones). It keeps its own prom-client Registry; the main thread asks
// for it at scrape time and adds the workers' series up (proxy/workers.ts).
//
// Messages, main → worker: {type: 'listen', http, https} (the addresses to bind: the configured ones for the first
// worker, the ports it got for the others) | {type: 'snapshot', snapshot} | {type: 'metrics', id} |
// {type: 'close', deadline}.
// Worker → main: {type: 'listening', http, https} | {type: 'failed', message} | {type: 'applied', version, error} |
// {type: 'status', status, requests} | {type: 'metrics', id, json} | {type: 'report', runs} | {type: 'log', line} |
// {type: 'closed'}.

import { parentPort, workerData } from 'node:worker_threads'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import type { Snapshot, UpstreamReporter } from '../model/snapshot.ts'
import type { Store, Subscriber } from '../model/store.ts'
import type { ListenAddress } from '../model/options.ts'
import { startProxyWith, type ProxyPlane } from './index.ts'
import type { ProxyWorkerInit, ReportRuns } from './worker-protocol.ts'

type FromMain =
  | { readonly type: 'listen'; readonly http: ListenAddress | null; readonly https: ListenAddress | null }
  | { readonly type: 'snapshot'; readonly snapshot: Snapshot }
  | { readonly type: 'metrics'; readonly id: number }
  | { readonly type: 'close'; readonly deadline: number }

const REPORT_FLUSH_MS = 20
/** Runs kept per endpoint between flushes. */
const MAX_RUNS = 64
const STATUS_EVERY_MS = 500

const port = parentPort!
const init = workerData as ProxyWorkerInit
// Log lines go to the main thread, which writes them through the plane's logger (as dns/worker.ts does).
const log = pino({ level: init.logLevel }, { write: (line: string) => port.postMessage({ type: 'log', line }) })
const registry = new Registry()

// The Store as the plane sees it: subscribe, fed from the main thread's posts.
const subscribers = new Set<Subscriber>()
let current: Snapshot | null = null
const store: Pick<Store, 'subscribe'> = {
  subscribe(fn) {
    subscribers.add(fn)
    if (current) fn(current)
    return () => subscribers.delete(fn)
  },
}

let runs: ReportRuns = {}
let pendingRuns = false
const reporter: UpstreamReporter = {
  report(serviceKey, ip, p, ok) {
    const key = `${serviceKey}|${ip}|${p}`
    const r = runs[key]
    pendingRuns = true
    if (r === undefined) {
      runs[key] = [ok ? 0 : 1]
      return
    }
    const last = r.length - 1
    if (ok) {
      if (r[last] !== 0) r.push(0)
    } else if (r[last]! > 0) r[last]!++
    else r.push(1)
    // Bounded: the oldest run goes (only alternating outcomes fill it, where the newest ones decide).
    if (r.length > MAX_RUNS) r.shift()
  },
}
const flush = setInterval(() => {
  if (!pendingRuns) return
  port.postMessage({ type: 'report', runs })
  runs = {}
  pendingRuns = false
}, REPORT_FLUSH_MS)
flush.unref()

let plane: ProxyPlane | null = null

/** Requests this worker answered: the sum of its meshlet_proxy_requests_total series. */
async function requests(): Promise<number> {
  const m = registry.getSingleMetric('meshlet_proxy_requests_total')
  if (!m) return 0
  const { values } = await m.get()
  return values.reduce((a, v) => a + v.value, 0)
}

async function sendStatus(): Promise<void> {
  if (plane === null) return
  port.postMessage({ type: 'status', status: plane.status(), requests: await requests(), ready: plane.ready() })
}

// Attached before the plane starts: a Snapshot posted meanwhile is kept and applied when the plane subscribes.
port.on('message', (m: FromMain) => {
  switch (m.type) {
    case 'listen':
      void start(m.http, m.https)
      break
    case 'snapshot': {
      current = m.snapshot
      let error: string | null = null
      for (const fn of subscribers) {
        try {
          fn(m.snapshot)
        } catch (err) {
          error = (err as Error).message
          log.error({ err }, 'route table rebuild failed in a proxy worker')
        }
      }
      port.postMessage({ type: 'applied', version: m.snapshot.version, error })
      void sendStatus()
      break
    }
    case 'metrics':
      void registry.getMetricsAsJSON().then((json) => port.postMessage({ type: 'metrics', id: m.id, json }))
      break
    case 'close':
      clearInterval(statusTimer)
      void (plane?.close(m.deadline) ?? Promise.resolve()).then(() => {
        flush.close()
        if (pendingRuns) port.postMessage({ type: 'report', runs })
        port.postMessage({ type: 'closed' })
        port.close()
      })
      break
  }
})

const statusTimer = setInterval(() => void sendStatus(), STATUS_EVERY_MS)
statusTimer.unref()

async function start(http: ListenAddress | null, https: ListenAddress | null): Promise<void> {
  try {
    plane = await startProxyWith(
      {
        // The plane only subscribes (see `store` above).
        store: store as Store,
        options: { ...init.options, http, https },
        log,
        metrics: registry,
        reporter,
      },
      { reusePort: true, ...(init.pem ? { defaultCertificate: init.pem } : {}) },
    )
  } catch (err) {
    port.postMessage({ type: 'failed', message: (err as Error).message })
    process.exit(1)
  }
  const listeners = (plane.status() as { listeners: Record<string, { port: number | null }> }).listeners
  port.postMessage({ type: 'listening', http: listeners.http?.port ?? null, https: listeners.https?.port ?? null })
  void sendStatus()
}
