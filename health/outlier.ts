// Passive ejection (Envoy's outlier detection, specs/l4-health.md §7.2 and §7.4), opt-in per Service by annotation.
// lb/ and proxy/ report every upstream attempt; N consecutive failures of one endpoint eject it for
// base × (ejections in a row), capped, through the Store, so every plane drops it in the same Snapshot. Never more
// than max-ejection-percent of a Service port's endpoints are out (at least one is always ejectable), and never the
// last usable endpoint of a list. The endpoint returns when its time is up, or earlier when a readiness probe of its
// Pod passes (Envoy's successful_active_health_check_uneject_host).

import type { Logger } from 'pino'
import type { ServiceState, Snapshot, UpstreamReporter } from '../model/snapshot.ts'
import { ejectionKey, findByKey } from '../model/snapshot.ts'
import type { Store } from '../model/store.ts'
import type { HealthMetrics } from './metrics.ts'
import { HealthError } from './errors.ts'

export const OUTLIER_ANNOTATIONS = {
  consecutiveFailures: 'meshlet.io/outlier-consecutive-failures',
  baseEjectionSeconds: 'meshlet.io/outlier-base-ejection-seconds',
  maxEjectionSeconds: 'meshlet.io/outlier-max-ejection-seconds',
  maxEjectionPercent: 'meshlet.io/outlier-max-ejection-percent',
} as const

const FIELDS = Object.keys(OUTLIER_ANNOTATIONS) as (keyof typeof OUTLIER_ANNOTATIONS)[]

/** Envoy's defaults: consecutive_5xx 5, base_ejection_time 30 s, max_ejection_time 300 s, max_ejection_percent 10. */
const DEFAULTS = { consecutiveFailures: 5, baseEjectionSeconds: 30, maxEjectionSeconds: 300, maxEjectionPercent: 10 }
const LIMITS = {
  consecutiveFailures: [1, 1_000_000],
  baseEjectionSeconds: [1, 86_400],
  maxEjectionSeconds: [1, 86_400],
  maxEjectionPercent: [0, 100],
} as const

export interface OutlierConfig {
  readonly consecutiveFailures: number
  readonly baseEjectionSeconds: number
  readonly maxEjectionSeconds: number
  readonly maxEjectionPercent: number
}

/** The Service's outlier settings, or null when none of the annotations is present (off). Bad values fall back. */
export function outlierConfig(
  annotations: Readonly<Record<string, string>>,
  errors: HealthError[],
): OutlierConfig | null {
  // Most Services carry none of the annotations: four lookups, no allocation.
  if (!FIELDS.some((f) => annotations[OUTLIER_ANNOTATIONS[f]] !== undefined)) return null
  let any = false
  const out = { ...DEFAULTS }
  for (const field of FIELDS) {
    const name = OUTLIER_ANNOTATIONS[field]
    const raw = annotations[name]
    if (raw === undefined) continue
    any = true
    const n = Number(raw.trim())
    const [min, max] = LIMITS[field]
    if (raw.trim() === '' || !Number.isInteger(n) || n < min || n > max) {
      errors.push(
        new HealthError(
          'MLT_HEALTH_OUTLIER_ANNOTATION',
          `${name}: must be an integer ${min}..${max}, got "${raw}"; using ${DEFAULTS[field]}`,
        ),
      )
      continue
    }
    out[field] = n
  }
  return any ? out : null
}

interface OutlierErrorEntry {
  readonly service: string
  readonly code: string
  readonly message: string
}

interface EndpointOutlier {
  readonly key: string
  readonly ip: string
  readonly port: number
  pod: string | null
  /** Ready in the Snapshot before ejection (an ejected endpoint reads not ready there). */
  ready: boolean
  failures: number
  ejected: boolean
  /** Ejections in a row, decayed by one per base time spent back in rotation. */
  ejections: number
  returnedAt: number
  until: number
  reason: string
  timer: NodeJS.Timeout | null
}

interface ServiceOutlier {
  readonly key: string
  readonly config: OutlierConfig
  /** ip → port → state: two lookups and no string building per report. */
  readonly byAddress: Map<string, Map<number, EndpointOutlier>>
  /** Each Service port's endpoint list, for the percentage and last-endpoint checks. */
  readonly lists: EndpointOutlier[][]
}

interface ServiceEntry {
  readonly state: ServiceState
  readonly errors: readonly OutlierErrorEntry[]
  readonly endpoints: ReadonlyMap<string, EndpointOutlier>
}

export class OutlierDetector implements UpstreamReporter {
  readonly #store: Store
  readonly #log: Logger
  readonly #metrics: HealthMetrics
  /** Services with outlier detection on, by key: what `report` looks up. */
  readonly #services = new Map<string, ServiceOutlier>()
  /**
   * Per Service with outlier detection on or an annotation error: the ServiceState its table was built from, and its
   * endpoint states by ejection key, kept across Snapshots (runtime state outlives config, as in Caddy).
   */
  readonly #entries = new Map<string, ServiceEntry>()
  readonly #ejected = new Set<EndpointOutlier>()
  #closed = false

  constructor(store: Store, log: Logger, metrics: HealthMetrics) {
    this.#store = store
    this.#log = log
    this.#metrics = metrics
  }

  report(serviceKey: string, ip: string, port: number, ok: boolean): void {
    const svc = this.#services.get(serviceKey)
    if (svc === undefined) return
    const ep = svc.byAddress.get(ip)?.get(port)
    if (ep === undefined) return
    if (ok) {
      ep.failures = 0
      return
    }
    ep.failures++
    if (!ep.ejected && ep.failures >= svc.config.consecutiveFailures) this.#tryEject(svc, ep)
  }

  /**
   * Brings the per-Service tables up to date with a Snapshot; ejections of endpoints that are gone are lifted.
   * `changed` is the Snapshot's `changes.services` when it follows the one applied before: only those Services are
   * looked at (issue 14: a readiness flip at 10,000 Services must not walk them all). Without it every Service is
   * compared by identity with the ServiceState its table was built from.
   */
  update(snapshot: Snapshot, changed?: ReadonlySet<string>): void {
    if (changed !== undefined) {
      for (const key of changed) this.#updateService(key, findByKey(snapshot.services, key))
      return
    }
    const seen = new Set<string>()
    for (const s of snapshot.services) {
      seen.add(s.key)
      if (this.#entries.get(s.key)?.state !== s) this.#updateService(s.key, s)
    }
    for (const key of [...this.#entries.keys()]) if (!seen.has(key)) this.#updateService(key, undefined)
  }

  /** One Service's table from its ServiceState (undefined: the Service is gone); endpoint state carries over. */
  #updateService(key: string, s: ServiceState | undefined): void {
    const old = this.#entries.get(key)
    if (s !== undefined && old?.state === s) return
    const errs: HealthError[] = []
    const config = s === undefined ? null : outlierConfig(s.service.meta.annotations, errs)
    const errors = errs.map((e) => ({ service: key, code: e.code, message: e.message }))
    if (errors.length > 0 && JSON.stringify(errors) !== JSON.stringify(old?.errors ?? [])) {
      for (const e of errors) this.#log.warn({ service: e.service, code: e.code }, e.message)
    }
    const endpoints = new Map<string, EndpointOutlier>()
    let outlier: ServiceOutlier | null = null
    if (s !== undefined && config !== null) {
      const byAddress = new Map<string, Map<number, EndpointOutlier>>()
      const lists: EndpointOutlier[][] = []
      for (const p of s.ports) {
        const list: EndpointOutlier[] = []
        for (const e of p.endpoints) {
          const epKey = ejectionKey(key, e.ip, e.port)
          let ep = endpoints.get(epKey) ?? old?.endpoints.get(epKey)
          if (!ep) {
            ep = {
              key: epKey,
              ip: e.ip,
              port: e.port,
              pod: e.pod,
              ready: e.ready,
              failures: 0,
              ejected: false,
              ejections: 0,
              returnedAt: 0,
              until: 0,
              reason: '',
              timer: null,
            }
          }
          ep.pod = e.pod
          ep.ready = ep.ejected ? ep.ready : e.ready
          endpoints.set(epKey, ep)
          let ports = byAddress.get(e.ip)
          if (!ports) byAddress.set(e.ip, (ports = new Map()))
          ports.set(e.port, ep)
          list.push(ep)
        }
        lists.push(list)
      }
      outlier = { key, config, byAddress, lists }
    }
    if (old) {
      for (const [epKey, ep] of old.endpoints) {
        if (!endpoints.has(epKey) && ep.ejected)
          this.#return(ep, 'endpoint left the Service or outlier detection was turned off')
      }
    }
    if (outlier) this.#services.set(key, outlier)
    else this.#services.delete(key)
    // Services with outlier detection off and no annotation error keep no entry: 10,000 plain Services cost nothing.
    if (s !== undefined && (outlier !== null || errors.length > 0))
      this.#entries.set(key, { state: s, errors, endpoints })
    else this.#entries.delete(key)
  }

  /** A readiness probe of `podKey` passed: its ejected endpoints come back at once. */
  readinessPassed(podKey: string): void {
    if (this.#ejected.size === 0) return
    for (const ep of this.#ejected) if (ep.pod === podKey) this.#return(ep, 'readiness probe passed')
  }

  close(): void {
    this.#closed = true
    for (const ep of this.#ejected) if (ep.timer) clearTimeout(ep.timer)
    this.#ejected.clear()
  }

  #tryEject(svc: ServiceOutlier, ep: EndpointOutlier): void {
    for (const list of svc.lists) {
      if (!list.includes(ep)) continue
      // Envoy: max_ejection_percent, but at least one host is always ejectable.
      const cap = Math.max(1, Math.floor((list.length * svc.config.maxEjectionPercent) / 100))
      let ejected = 0
      let usableOthers = 0
      for (const other of list) {
        if (other.ejected) ejected++
        else if (other !== ep && other.ready) usableOthers++
      }
      if (ejected + 1 > cap) {
        this.#log.debug(
          { service: svc.key, ip: ep.ip, port: ep.port, cap },
          'ejection refused: max ejection percent reached',
        )
        return
      }
      if (usableOthers === 0) {
        this.#log.debug({ service: svc.key, ip: ep.ip, port: ep.port }, 'ejection refused: last usable endpoint')
        return
      }
    }
    const now = Date.now()
    const baseMs = svc.config.baseEjectionSeconds * 1000
    const decayed = ep.returnedAt === 0 ? 0 : Math.max(0, ep.ejections - Math.floor((now - ep.returnedAt) / baseMs))
    ep.ejections = decayed + 1
    const ms = Math.min(baseMs * ep.ejections, svc.config.maxEjectionSeconds * 1000)
    ep.ejected = true
    ep.until = now + ms
    ep.reason = `${ep.failures} consecutive upstream failures: ejected for ${ms / 1000}s (ejection ${ep.ejections} in a row)`
    ep.failures = 0
    ep.timer = setTimeout(() => this.#return(ep, 'ejection time is up'), ms)
    ep.timer.unref()
    this.#ejected.add(ep)
    this.#metrics.ejections.inc({ service: svc.key })
    this.#metrics.ejected.set(this.#ejected.size)
    this.#log.info(
      { service: svc.key, ip: ep.ip, port: ep.port, seconds: ms / 1000, ejections: ep.ejections },
      'endpoint ejected',
    )
    this.#store.setEjected(ep.key, ep.reason)
  }

  #return(ep: EndpointOutlier, why: string): void {
    if (!ep.ejected) return
    if (ep.timer) clearTimeout(ep.timer)
    ep.timer = null
    ep.ejected = false
    ep.failures = 0
    ep.returnedAt = Date.now()
    this.#ejected.delete(ep)
    this.#metrics.ejected.set(this.#ejected.size)
    if (this.#closed) return
    this.#log.info({ endpoint: ep.key, reason: why }, 'endpoint returned from ejection')
    this.#store.setEjected(ep.key, null)
  }

  status() {
    return {
      services: [...this.#services.values()]
        .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
        .map((s) => ({ service: s.key, ...s.config })),
      ejected: [...this.#ejected].map((ep) => ({
        key: ep.key,
        ip: ep.ip,
        port: ep.port,
        reason: ep.reason,
        until: new Date(ep.until).toISOString(),
        ejections: ep.ejections,
      })),
      // In Service key order, as the Snapshot lists them.
      errors: [...this.#entries.values()]
        .filter((e) => e.errors.length > 0)
        .sort((a, b) => (a.state.key < b.state.key ? -1 : a.state.key > b.state.key ? 1 : 0))
        .flatMap((e) => e.errors),
    }
  }
}
