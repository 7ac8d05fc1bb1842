// Route table compilation (specs/ingress.md §1.1–§1.3) as a pipeline of functions that return data and never change
// their input:
//
//   select (class, §1.1) ─► per Ingress: validate (§1.2) ─► resolve backends (§1.3.7) ─► routes, TLS entries
//                                        (an IngressUnit, reused whole while its inputs are the same objects)
//   ─► build virtual hosts, resolve conflicts (§1.3.5–6) ─► attach canaries ─► TLS index (§1.3.10) ─► describe
//
// The last good version of each Ingress (§1.2) is the caller's: it passes the map in and keeps the new one returned.
// (Over 500 lines on purpose: one pipeline whose stages read top to bottom in the order they run, sharing the
// IngressUnit shape; split, each half would be meaningless without the other.)
//
// Scale (issue 14): Snapshots share unchanged objects (model/build-snapshot.ts), so an Ingress whose object, last
// good version, Services and Secrets are the same objects as in the previous compile gets its previous IngressUnit
// back without any work; an edit costs the changed Ingresses plus the merge, which only moves references.

import type { SecureContext } from 'node:tls'
import type { Ingress, IngressServiceBackend, Secret } from '../../model/objects.ts'
import { objectKey } from '../../model/objects.ts'
import type { ServiceState, Snapshot } from '../../model/snapshot.ts'
import { ingressHostProblem, ingressPathProblem } from '../../model/validate-ingress.ts'
import { normalizePath, type PathOptions } from '../http/normalize.ts'
import type { ProxyMetrics, RouteStats } from '../metrics.ts'
import type { SecureContextCache, TlsIndex } from '../tls.ts'
import { UpstreamGroup, usableEndpoints, type Endpoint, type EndpointRegistry } from '../upstream.ts'
import { parseAnnotations, type IngressConfig } from './annotations.ts'
import { compileRegex, regexReason, type UserRegex } from './regex.ts'
import {
  classReason,
  type Backend,
  type IngressStatus,
  type Route,
  type RouteKind,
  type RouteStatus,
  type RouteTable,
  type VHost,
} from './route-table.ts'

export interface CompileInput {
  readonly snapshot: Snapshot
  readonly ingressClass: string
  readonly pathOptions: PathOptions
  readonly endpoints: EndpointRegistry
  readonly metrics: ProxyMetrics
  readonly contexts: SecureContextCache
  /** Last accepted version of each Ingress, by key (the previous result's `lastGood`): served while the current one is rejected. */
  readonly lastGood: ReadonlyMap<string, Ingress>
  /** The previous result: its backends and Ingress units are reused while their inputs are the same objects. */
  readonly previous?: CompileResult | null
}

/** A resolved backend and what resolving it produced, kept for the next compile (issue 14). */
export interface ReusedBackend {
  readonly svc: ServiceState | undefined
  readonly backend: Backend
  readonly eps: readonly Endpoint[]
  readonly warnings: readonly string[]
}

export interface CompileResult {
  readonly table: RouteTable
  /** Every endpoint a route may use (the rest are retired). */
  readonly live: Set<Endpoint>
  readonly ingresses: IngressStatus[]
  readonly conflicts: string[]
  readonly notes: string[]
  /** Every backend of this table, for the next compile to reuse. */
  readonly backends: ReadonlyMap<string, ReusedBackend>
  /** The last good version of each Ingress after this compile (the next compile's `lastGood`). */
  readonly lastGood: ReadonlyMap<string, Ingress>
  /** Per-Ingress results, by key, for the next compile to reuse. */
  readonly units: ReadonlyMap<string, IngressUnit>
  /** Secrets ("ns/name") the Ingresses read: their SecureContexts stay cached. */
  readonly secrets: ReadonlySet<string>
}

interface Candidate {
  readonly route: Route
  readonly ruleIndex: number
  readonly pathIndex: number
}

interface TlsEntry {
  /** Lowercase host, "*.x" for a wildcard; null for an entry without hosts (the fallback certificate). */
  readonly host: string | null
  readonly secretKey: string | null
  readonly ctx: SecureContext | null
}

/** Everything one Ingress contributes, and the objects it was computed from (to tell whether it can be reused). */
export interface IngressUnit {
  readonly current: Ingress
  /** The version served: `current`, or the last good one when `current` is rejected; null when nothing is served. */
  readonly served: Ingress | null
  /** The last good version this unit was computed with (it matters only while `current` is rejected). */
  readonly last: Ingress | undefined
  /** A canary Ingress (its paths join other Ingresses' routes; it makes no vhost of its own). */
  readonly canary: boolean
  readonly status: Omit<IngressStatus, 'warnings'> & { readonly warnings: readonly string[] }
  readonly primaries: readonly Candidate[]
  readonly canaries: readonly Candidate[]
  readonly defaultRoute: Route | null
  readonly tls: readonly TlsEntry[]
  readonly backends: ReadonlyMap<string, ReusedBackend>
  /** Services ("ns/name") and Secrets ("ns/name") read, with the object seen (undefined: absent). */
  readonly services: ReadonlyMap<string, ServiceState | undefined>
  readonly secrets: ReadonlyMap<string, Secret | undefined>
}

/** Lookups of one Snapshot, shared by the per-Ingress stage; `backends` collects what this compile resolved. */
interface Env {
  readonly input: CompileInput
  readonly services: ReadonlyMap<string, ServiceState>
  readonly secrets: ReadonlyMap<string, Secret>
  readonly reuse: ReadonlyMap<string, ReusedBackend>
  readonly backends: Map<string, ReusedBackend>
}

export function compile(input: CompileInput): CompileResult {
  const { snapshot } = input
  const env: Env = {
    input,
    services: new Map(snapshot.services.map((s) => [s.key, s])),
    secrets: new Map(snapshot.secrets.map((s) => [objectKey(s.meta), s])),
    reuse: input.previous?.backends ?? new Map(),
    backends: new Map(),
  }
  const previousUnits = input.previous?.units ?? new Map<string, IngressUnit>()
  const sorted = [...snapshot.ingresses].sort((a, b) => cmp(objectKey(a.meta), objectKey(b.meta)))
  const units = new Map<string, IngressUnit>()
  const lastGood = new Map<string, Ingress>()
  const ignoredStatus: IngressStatus[] = []
  const order: string[] = []
  for (const ing of sorted) {
    const key = objectKey(ing.meta)
    order.push(key)
    const ignored = classReason(ing, snapshot, input.ingressClass)
    if (ignored !== null) {
      ignoredStatus.push(ignoredIngress(key, ing, ignored))
      continue
    }
    const prev = previousUnits.get(key)
    const unit =
      prev !== undefined && reusable(prev, ing, input.lastGood.get(key), env) ? prev : ingressUnit(key, ing, env)
    for (const b of unit.backends) if (!env.backends.has(b[0])) env.backends.set(b[0], b[1])
    units.set(key, unit)
    // Accepted: this version is the last good one. Rejected: the last good one stays. Ignored or gone: forgotten.
    const good = unit.status.state === 'accepted' ? ing : input.lastGood.get(key)
    if (good !== undefined) lastGood.set(key, good)
  }
  return merge(input, order, units, ignoredStatus, env.backends, lastGood)
}

/** Whether the previous unit of this Ingress still holds: the same objects in, so the same result out. */
function reusable(prev: IngressUnit, current: Ingress, last: Ingress | undefined, env: Env): boolean {
  if (prev.current !== current) return false
  // A rejected Ingress serves its last good version (if valid): that must be the same one too.
  if (prev.status.state === 'rejected' && prev.last !== last) return false
  for (const [k, s] of prev.services) if (env.services.get(k) !== s) return false
  for (const [k, s] of prev.secrets) if (env.secrets.get(k) !== s) return false
  return true
}

function ignoredIngress(key: string, ing: Ingress, reason: string): IngressStatus {
  return {
    ingress: key,
    state: 'ignored',
    source: sourceOf(ing),
    code: null,
    reasons: [reason],
    warnings: [],
    unknownAnnotations: [],
    servingLastGood: false,
  }
}

function sourceOf(ing: Ingress): string {
  return `${ing.meta.source.file} doc ${ing.meta.source.doc}`
}

// ---------------------------------------------------------------- per Ingress

/** Records the Services and Secrets an Ingress's stage reads, so its unit can be checked for reuse. */
class Reads {
  readonly env: Env
  readonly services = new Map<string, ServiceState | undefined>()
  readonly secrets = new Map<string, Secret | undefined>()
  readonly backends = new Map<string, ReusedBackend>()

  constructor(env: Env) {
    this.env = env
  }

  service(key: string): ServiceState | undefined {
    const s = this.env.services.get(key)
    this.services.set(key, s)
    return s
  }

  secret(key: string): Secret | undefined {
    const s = this.env.secrets.get(key)
    this.secrets.set(key, s)
    return s
  }
}

function ingressUnit(key: string, current: Ingress, env: Env): IngressUnit {
  const reads = new Reads(env)
  const { input } = env
  let parsed = parseAnnotations(current.meta.annotations)
  const reasons = validate(current, parsed.config, parsed.errors, reads)
  let served: Ingress | null = current
  let servingLastGood = false
  if (reasons.length > 0) {
    served = null
    const last = input.lastGood.get(key)
    if (last !== undefined && last !== current) {
      const lastParsed = parseAnnotations(last.meta.annotations)
      if (validate(last, lastParsed.config, lastParsed.errors, reads).length === 0) {
        served = last
        parsed = lastParsed
        servingLastGood = true
      }
    }
  }
  const warnings: string[] = []
  const primaries: Candidate[] = []
  const canaries: Candidate[] = []
  let defaultRoute: Route | null = null
  const tls: TlsEntry[] = []
  if (served !== null) {
    warnings.push(...parsed.warnings)
    const config = parsed.config
    const ns = served.meta.namespace
    const isCanary = config.canary !== null
    served.spec.rules.forEach((rule, ri) => {
      const host = rule.host?.toLowerCase() ?? ''
      rule.paths.forEach((p, pi) => {
        const backend = resolveBackend(ns, p.backend, config, warnings, reads)
        const regex = p.pathType === 'ImplementationSpecific' && config.useRegex
        let kind: RouteKind
        let routeKey: string
        if (regex) {
          kind = 'Regex'
          routeKey = p.path
        } else {
          const norm = normalizePath(p.path, input.pathOptions)!
          kind = p.pathType === 'Exact' ? 'Exact' : 'Prefix'
          routeKey = kind === 'Prefix' && norm.length > 1 && norm.endsWith('/') ? norm.slice(0, -1) : norm
        }
        const route: Route = {
          ingress: key,
          host,
          path: p.path,
          kind,
          key: routeKey,
          regex: regex ? (compileRegex(p.path, true) as UserRegex) : null,
          backend,
          config,
          stats: input.metrics.stats(key, p.path, backend.label),
          canary: null,
        }
        ;(isCanary ? canaries : primaries).push({ route, ruleIndex: ri, pathIndex: pi })
      })
    })
    if (served.spec.defaultBackend !== null) {
      const backend = resolveBackend(ns, served.spec.defaultBackend, config, warnings, reads)
      if (isCanary) warnings.push('spec.defaultBackend of a canary Ingress is ignored')
      else
        defaultRoute = {
          ingress: key,
          host: '',
          path: '',
          kind: 'Default',
          key: '',
          regex: null,
          backend,
          config,
          stats: input.metrics.stats(key, '', backend.label),
          canary: null,
        }
    }
    if (!isCanary)
      for (const t of served.spec.tls) {
        const secretKey = t.secretName === null ? null : `${ns}/${t.secretName}`
        const ctx = secretKey === null ? null : input.contexts.get(secretKey, reads.secret(secretKey)!.tls!)
        if (t.hosts.length === 0) tls.push({ host: null, secretKey, ctx })
        for (const h of t.hosts) tls.push({ host: h.toLowerCase(), secretKey, ctx })
      }
  }
  return {
    current,
    served,
    last: input.lastGood.get(key),
    canary: served !== null && parsed.config.canary !== null,
    status: {
      ingress: key,
      state: reasons.length > 0 ? 'rejected' : 'accepted',
      source: sourceOf(current),
      code: reasons.length > 0 ? 'MLT_PROXY_INGRESS_INVALID' : null,
      reasons,
      warnings,
      unknownAnnotations: served !== null ? [...parsed.unknown] : [],
      servingLastGood,
    },
    primaries,
    canaries,
    defaultRoute,
    tls,
    backends: reads.backends,
    services: reads.services,
    secrets: reads.secrets,
  }
}

/** §1.2 checks; returns the reasons to reject, empty when valid. Host and path rules are model/'s. */
function validate(ing: Ingress, config: IngressConfig, annotationErrors: string[], reads: Reads): string[] {
  const { input } = reads.env
  const reasons = [...annotationErrors]
  const ns = ing.meta.namespace
  if (ing.spec.rules.length === 0 && ing.spec.defaultBackend === null)
    reasons.push('spec: either rules or defaultBackend is required')
  ing.spec.rules.forEach((rule, ri) => {
    if (rule.host !== null) {
      const why = ingressHostProblem(rule.host)
      if (why) reasons.push(`spec.rules[${ri}].host: "${rule.host}" ${why}`)
    }
    rule.paths.forEach((p, pi) => {
      const at = `spec.rules[${ri}].http.paths[${pi}]`
      const regex = p.pathType === 'ImplementationSpecific' && config.useRegex
      if (regex) {
        const why = regexReason(p.path)
        if (why) reasons.push(`${at}.path: regex "${p.path}": ${why}`)
      } else if (p.pathType === 'ImplementationSpecific') {
        if (!p.path.startsWith('/'))
          reasons.push(`${at}.path: "${p.path}" must start with "/" (or use the use-regex annotation)`)
        else if (normalizePath(p.path, input.pathOptions) === null)
          reasons.push(`${at}.path: "${p.path}" is not a valid path`)
      } else {
        // '#' is the router's own refusal (a request path never carries one), not an API-server rule.
        const why =
          ingressPathProblem(p.path) ??
          (p.path.includes('#') ? "must not contain '#'" : null) ??
          (normalizePath(p.path, input.pathOptions) === null ? 'has an invalid escape or "\\"' : null)
        if (why) reasons.push(`${at}.path: "${p.path}" ${why}`)
      }
      const port = p.backend.service.port
      if ((port.name === null) === (port.number === null))
        reasons.push(`${at}.backend.service.port: exactly one of name and number is required`)
    })
  })
  ing.spec.tls.forEach((t, ti) => {
    t.hosts.forEach((h, hi) => {
      const why = ingressHostProblem(h)
      if (why) reasons.push(`spec.tls[${ti}].hosts[${hi}]: "${h}" ${why}`)
    })
    if (t.secretName === null) return
    const secret = reads.secret(`${ns}/${t.secretName}`)
    if (!secret) reasons.push(`spec.tls[${ti}].secretName: Secret ${ns}/${t.secretName} not found`)
    else if (secret.type !== 'kubernetes.io/tls' || secret.tls === null) {
      reasons.push(
        `spec.tls[${ti}].secretName: Secret ${ns}/${t.secretName} is not of type kubernetes.io/tls with tls.crt and tls.key`,
      )
    } else {
      try {
        input.contexts.get(`${ns}/${t.secretName}`, secret.tls)
      } catch (err) {
        reasons.push(`spec.tls[${ti}].secretName: Secret ${ns}/${t.secretName}: ${(err as Error).message}`)
      }
    }
  })
  return reasons
}

/**
 * §1.3.7: the upstream group of a Service port. Snapshots share unchanged ServiceStates: the same one resolves to the
 * backend resolved before (no new group, no lookups), here or in an earlier compile.
 */
function resolveBackend(
  ns: string,
  b: IngressServiceBackend,
  config: IngressConfig,
  warnings: string[],
  reads: Reads,
): Backend {
  const { env } = reads
  const svcKey = `${ns}/${b.service.name}`
  const portText = b.service.port.name ?? String(b.service.port.number)
  const label = `${svcKey}:${portText}`
  const cacheKey = `${label}|${config.connectTimeoutMs}`
  // Within one Ingress a backend is resolved (and warned about) once; the unit must not depend on other Ingresses.
  const mine = reads.backends.get(cacheKey)
  if (mine !== undefined) return mine.backend
  const svc = reads.service(svcKey)
  const known = env.backends.get(cacheKey) ?? env.reuse.get(cacheKey)
  if (known !== undefined && known.svc === svc) {
    warnings.push(...known.warnings)
    reads.backends.set(cacheKey, known)
    env.backends.set(cacheKey, known)
    return known.backend
  }
  const own: string[] = []
  let eps: Endpoint[] = []
  let backend: Backend
  if (!svc) {
    backend = { service: svcKey, label, group: null, error: `Service ${svcKey} not found` }
  } else {
    let port =
      b.service.port.name !== null
        ? svc.ports.find((p) => p.name === b.service.port.name)
        : svc.ports.find((p) => p.port === b.service.port.number)
    if (!port && b.service.port.number !== null) {
      port = svc.ports.find((p) => p.targetPort === b.service.port.number)
      if (port)
        own.push(
          `backend ${label}: no Service port ${portText}; using the port whose targetPort is ${portText} (ingress-nginx compatibility)`,
        )
    }
    if (svc.service.spec.type === 'ExternalName' && svc.service.spec.externalName) {
      const num = port?.port ?? b.service.port.number
      if (num === null || num === undefined) {
        backend = { service: svcKey, label, group: null, error: `ExternalName Service ${svcKey} needs a port number` }
      } else {
        eps = [env.input.endpoints.get(svc.service.spec.externalName, num, config.connectTimeoutMs)]
        backend = { service: svcKey, label, group: new UpstreamGroup(svcKey, label, eps), error: null }
      }
    } else if (!port) {
      backend = { service: svcKey, label, group: null, error: `Service ${svcKey} has no port ${portText}` }
    } else if (port.protocol !== 'TCP') {
      backend = { service: svcKey, label, group: null, error: `Service port ${label} is ${port.protocol}, not TCP` }
    } else {
      eps = usableEndpoints(port).map((e) => env.input.endpoints.get(e.ip, e.port, config.connectTimeoutMs))
      backend = { service: svcKey, label, group: new UpstreamGroup(svcKey, label, eps), error: null }
    }
  }
  if (backend.error) own.push(backend.error)
  warnings.push(...own)
  const made: ReusedBackend = { svc, backend, eps, warnings: own }
  reads.backends.set(cacheKey, made)
  env.backends.set(cacheKey, made)
  return backend
}

// ---------------------------------------------------------------- merge

function merge(
  input: CompileInput,
  order: readonly string[],
  units: ReadonlyMap<string, IngressUnit>,
  ignored: readonly IngressStatus[],
  backends: ReadonlyMap<string, ReusedBackend>,
  lastGood: ReadonlyMap<string, Ingress>,
): CompileResult {
  // Statuses are fresh each compile: the merge adds conflict warnings to them.
  const statuses = new Map<string, IngressStatus>()
  for (const s of ignored) statuses.set(s.ingress, s)
  for (const [k, u] of units) statuses.set(k, { ...u.status, warnings: [...u.status.warnings] })
  const ingresses = order.map((k) => statuses.get(k)!)
  const conflicts: string[] = []
  const lose = (loser: Route, winner: Route): void => {
    const msg = `${loser.ingress}: ${loser.kind} ${loser.host || '*'}${loser.path} loses to ${winner.ingress} (same host and path)`
    conflicts.push(msg)
    statuses.get(loser.ingress)?.warnings.push(msg)
  }
  const hosts = buildVirtualHosts(order, units, lose)
  const defaultRoute = pickDefault(order, units, conflicts, statuses)
  const withCanaries = attachCanaries(order, units, hosts, statuses)
  const tls = tlsIndex(order, units)
  for (const [host, v] of withCanaries.exact) {
    const dot = host.indexOf('.')
    v.tls = tls.tlsHosts.has(host) || (dot > 0 && tls.tlsWild.has(host.slice(dot + 1)))
  }
  for (const [suffix, v] of withCanaries.wild) v.tls = tls.tlsWild.has(suffix)

  const notes: string[] = []
  if (
    input.snapshot.ingressClasses.length === 0 &&
    input.snapshot.ingresses.some((i) => i.spec.ingressClassName === null)
  )
    notes.push('no IngressClass objects: Ingresses without a class are served by meshlet')

  const live = new Set<Endpoint>()
  for (const b of backends.values()) for (const ep of b.eps) live.add(ep)
  const secrets = new Set<string>()
  for (const u of units.values()) for (const k of u.secrets.keys()) secrets.add(k)
  const table: RouteTable = {
    exact: withCanaries.exact,
    wild: withCanaries.wild,
    catchAll: withCanaries.catchAll,
    defaultRoute,
    tls: tls.index,
    tlsHosts: tls.tlsHosts,
    tlsWild: tls.tlsWild,
  }
  return {
    table,
    live,
    ingresses,
    conflicts,
    notes,
    backends,
    lastGood,
    units,
    secrets,
  }
}

interface Hosts {
  readonly exact: Map<string, VHost>
  readonly wild: Map<string, VHost>
  catchAll: VHost | null
}

function vhostIn(h: Hosts, host: string): VHost {
  const make = (): VHost => ({ host, exact: new Map(), prefix: new Map(), regex: [], tls: false })
  if (host === '') return (h.catchAll ??= make())
  const map = host.startsWith('*.') ? h.wild : h.exact
  const key = host.startsWith('*.') ? host.slice(2) : host
  let v = map.get(key)
  if (!v) map.set(key, (v = make()))
  return v
}

/**
 * §1.3.5–6: paths of all served Ingresses merged per host. Same host + kind + path twice: the first inserted wins
 * (Ingresses by namespace/name, then rule and path index); Prefix "/foo/" beats "/foo" whatever the order.
 */
function buildVirtualHosts(
  order: readonly string[],
  units: ReadonlyMap<string, IngressUnit>,
  lose: (loser: Route, winner: Route) => void,
): Hosts {
  const h: Hosts = { exact: new Map(), wild: new Map(), catchAll: null }
  for (const k of order) {
    const u = units.get(k)
    if (u === undefined || u.served === null || u.canary) continue
    // A rule without paths still makes its vhost (§1.3.9).
    for (const rule of u.served.spec.rules) vhostIn(h, rule.host?.toLowerCase() ?? '')
  }
  for (const k of order) {
    const u = units.get(k)
    if (u === undefined) continue
    for (const { route } of u.primaries) {
      const v = vhostIn(h, route.host)
      if (route.kind === 'Regex') {
        const prev = v.regex.find((r) => r.key === route.key)
        if (prev) lose(route, prev)
        else v.regex.push(route)
        continue
      }
      const map = route.kind === 'Exact' ? v.exact : v.prefix
      const prev = map.get(route.key)
      if (!prev) map.set(route.key, route)
      else if (route.kind === 'Prefix' && route.path.endsWith('/') && !prev.path.endsWith('/')) {
        map.set(route.key, route)
        lose(prev, route)
      } else lose(route, prev)
    }
  }
  // nginx checks regex locations longest first (ingress-nginx sorts them by length).
  for (const v of allVHosts(h)) v.regex.sort((a, b) => b.key.length - a.key.length)
  return h
}

function allVHosts(h: { exact: ReadonlyMap<string, VHost>; wild: ReadonlyMap<string, VHost>; catchAll: VHost | null }) {
  return [...h.exact.values(), ...h.wild.values(), ...(h.catchAll ? [h.catchAll] : [])]
}

/** §1.3.8: the first `spec.defaultBackend` by namespace/name; the others are reported. */
function pickDefault(
  order: readonly string[],
  units: ReadonlyMap<string, IngressUnit>,
  conflicts: string[],
  statuses: ReadonlyMap<string, IngressStatus>,
): Route | null {
  let chosen: Route | null = null
  for (const k of order) {
    const r = units.get(k)?.defaultRoute
    if (r === undefined || r === null) continue
    if (chosen === null) chosen = r
    else {
      const msg = `spec.defaultBackend of ${k} loses to ${chosen.ingress} (older or first by namespace/name)`
      conflicts.push(msg)
      statuses.get(k)?.warnings.push(msg)
    }
  }
  return chosen
}

/**
 * A canary Ingress's path joins the primary route of the same host and path. Routes are shared with earlier tables
 * (reused units), so a primary that gets a canary is copied with it, never changed in place.
 */
function attachCanaries(
  order: readonly string[],
  units: ReadonlyMap<string, IngressUnit>,
  h: Hosts,
  statuses: ReadonlyMap<string, IngressStatus>,
): Hosts {
  for (const k of order) {
    const u = units.get(k)
    if (u === undefined) continue
    for (const { route } of u.canaries) {
      const v =
        route.host === ''
          ? h.catchAll
          : route.host.startsWith('*.')
            ? h.wild.get(route.host.slice(2))
            : h.exact.get(route.host)
      const primary = v
        ? route.kind === 'Regex'
          ? v.regex.find((r) => r.key === route.key)
          : (route.kind === 'Exact' ? v.exact : v.prefix).get(route.key)
        : undefined
      const st = statuses.get(route.ingress)
      if (!v || !primary)
        st?.warnings.push(
          `canary path ${route.host || '*'}${route.path} has no primary Ingress path to attach to; not served`,
        )
      else if (primary.canary)
        st?.warnings.push(
          `canary path ${route.host || '*'}${route.path}: ${primary.canary.ingress} is already its canary`,
        )
      else {
        const joined: Route = { ...primary, canary: route }
        if (primary.kind === 'Regex') v.regex[v.regex.indexOf(primary)] = joined
        else (primary.kind === 'Exact' ? v.exact : v.prefix).set(primary.key, joined)
      }
    }
  }
  return h
}

/** §1.3.10: SNI certificates (exact host, one-label wildcard, an entry without hosts) and the TLS host sets. */
function tlsIndex(
  order: readonly string[],
  units: ReadonlyMap<string, IngressUnit>,
): { index: TlsIndex; tlsHosts: Set<string>; tlsWild: Set<string> } {
  const exact = new Map<string, SecureContext>()
  const wild = new Map<string, SecureContext>()
  const names: Record<string, string> = {}
  const tlsHosts = new Set<string>()
  const tlsWild = new Set<string>()
  let fallback: SecureContext | null = null
  let fallbackName: string | null = null
  for (const k of order) {
    const u = units.get(k)
    if (u === undefined) continue
    for (const t of u.tls) {
      if (t.host === null) {
        if (t.ctx && fallback === null) {
          fallback = t.ctx
          fallbackName = t.secretKey
        }
        continue
      }
      const h = t.host
      if (h.startsWith('*.')) {
        tlsWild.add(h.slice(2))
        if (t.ctx && !wild.has(h.slice(2))) wild.set(h.slice(2), t.ctx)
      } else {
        tlsHosts.add(h)
        if (t.ctx && !exact.has(h)) exact.set(h, t.ctx)
      }
      if (!(h in names)) names[h] = t.secretKey ?? '(default certificate)'
    }
  }
  return {
    index: { exact, wild, fallback, hosts: { ...names, ...(fallbackName ? { '(default)': fallbackName } : {}) } },
    tlsHosts,
    tlsWild,
  }
}

/**
 * The stats of every route the Ingresses define, served or not (a conflict's loser may win in a later table while
 * its unit is reused): the metrics of all others can go.
 */
export function routeStats(result: CompileResult): Set<RouteStats> {
  const out = new Set<RouteStats>()
  for (const u of result.units.values()) {
    for (const c of u.primaries) out.add(c.route.stats)
    for (const c of u.canaries) out.add(c.route.stats)
    if (u.defaultRoute !== null) out.add(u.defaultRoute.stats)
  }
  return out
}

/**
 * /status `routes`: every route of the table, vhost by vhost, then the default backend. Computed when /status is
 * read, not per compile: at 10,000 routes it is a good part of the merge's cost.
 */
export function describeRoutes(t: RouteTable): RouteStatus[] {
  const one = (r: Route): RouteStatus => {
    const endpoints = r.backend.group?.endpoints.length ?? 0
    return {
      host: r.host || '*',
      path: r.path,
      kind: r.kind,
      ingress: r.ingress,
      service: r.backend.label,
      endpoints,
      error: r.backend.error,
      code: endpoints === 0 ? 'MLT_PROXY_NO_ENDPOINTS' : null,
      canary: r.canary ? `${r.canary.ingress} → ${r.canary.backend.label}` : null,
    }
  }
  const out: RouteStatus[] = []
  for (const v of allVHosts(t))
    for (const r of [...v.exact.values(), ...v.prefix.values(), ...v.regex]) out.push(one(r))
  if (t.defaultRoute) out.push(one(t.defaultRoute))
  return out
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}
