// The route table, compiled from each Snapshot (specs/ingress.md §1.1–§1.3) and swapped as one reference. Nothing in
// here runs per request except the two lookup functions at the end (§1.5, §1.6), which only read Maps.
//
//   RouteTable ─ exact: Map<host, VHost>      VHost ─ exact:  Map<path, Route>
//              ─ wild:  Map<suffix, VHost>          ─ prefix: Map<key, Route>   (key = path minus one trailing "/")
//              ─ catchAll: VHost | null             ─ regex:  Route[]           (use-regex, longest pattern first)
//              ─ defaultRoute: Route | null
//              ─ tls: TlsIndex (SNI)

import type { Ingress, IngressServiceBackend, Secret } from '../../model/objects.ts'
import { objectKey } from '../../model/objects.ts'
import type { ServiceState, Snapshot } from '../../model/snapshot.ts'
import { parseAnnotations, type IngressConfig } from './annotations.ts'
import type { ProxyErrorCode } from '../errors.ts'
import type { ProxyMetrics, RouteStats } from '../metrics.ts'
import { normalizePath, type PathOptions } from '../http/normalize.ts'
import { compileRegex, matchLength, regexReason, type UserRegex } from './regex.ts'
import { EMPTY_TLS, type SecureContextCache, type TlsIndex } from '../tls.ts'
import { UpstreamGroup, usableEndpoints, type Endpoint, type EndpointRegistry } from '../upstream.ts'
import type { SecureContext } from 'node:tls'

/** The `spec.controller` value of an IngressClass that names meshlet. */
export const CONTROLLER_ID = 'meshlet.dev/ingress-controller'

export type RouteKind = 'Exact' | 'Prefix' | 'Regex' | 'Default'

export interface Backend {
  /** "namespace/name" of the Service. */
  readonly service: string
  /** "namespace/name:port" (logs, metrics, /status). */
  readonly label: string
  /** null: the Service or its port is missing (503, with `error` in /status). */
  readonly group: UpstreamGroup | null
  readonly error: string | null
}

export interface Route {
  /** "namespace/name" of the Ingress. */
  readonly ingress: string
  /** The rule host (lowercase, "*.x" for wildcards), "" for rules without host and the default backend. */
  readonly host: string
  /** The path as written in the Ingress. */
  readonly path: string
  readonly kind: RouteKind
  /** Exact: the normalised path; Prefix: the normalised path minus one trailing "/"; Regex: the pattern. */
  readonly key: string
  /** Regex routes: the pattern, anchored at the start, case-insensitive, run by the linear-time engine. */
  readonly regex: UserRegex | null
  readonly backend: Backend
  readonly config: IngressConfig
  readonly stats: RouteStats
  /** A canary Ingress's route for the same host and path; null when there is none. Set during compilation. */
  canary: Route | null
}

export interface VHost {
  readonly host: string
  readonly exact: Map<string, Route>
  readonly prefix: Map<string, Route>
  readonly regex: Route[]
  /** The host (or a wildcard TLS entry covering it) has a `tls` entry: HTTP requests may be redirected. */
  tls: boolean
}

export interface RouteTable {
  readonly exact: ReadonlyMap<string, VHost>
  readonly wild: ReadonlyMap<string, VHost>
  readonly catchAll: VHost | null
  readonly defaultRoute: Route | null
  readonly tls: TlsIndex
  /** Exact hosts and wildcard suffixes with TLS (to decide redirects for the catch-all vhost). */
  readonly tlsHosts: ReadonlySet<string>
  readonly tlsWild: ReadonlySet<string>
}

export const EMPTY_TABLE: RouteTable = {
  exact: new Map(),
  wild: new Map(),
  catchAll: null,
  defaultRoute: null,
  tls: EMPTY_TLS,
  tlsHosts: new Set(),
  tlsWild: new Set(),
}

// ---------------------------------------------------------------- per request

/** §1.5: exact host, then a one-label wildcard, then the catch-all vhost. No fall-through between vhosts. */
export function pickVHost(t: RouteTable, host: string): VHost | null {
  const v = t.exact.get(host)
  if (v !== undefined) return v
  if (t.wild.size > 0) {
    const dot = host.indexOf('.')
    if (dot > 0 && isLabel(host, dot)) {
      const w = t.wild.get(host.slice(dot + 1))
      if (w !== undefined) return w
    }
  }
  return t.catchAll
}

function isLabel(host: string, end: number): boolean {
  for (let i = 0; i < end; i++) {
    const c = host.charCodeAt(i)
    if (!((c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 45 || c === 95)) return false
  }
  return true
}

/**
 * §1.6: Exact equality wins; else the longest element-wise Prefix; regex routes (use-regex) compete on the length of
 * what they matched, a Prefix winning a tie.
 */
export function pickRoute(v: VHost, p: string): Route | null {
  const e = v.exact.get(p)
  if (e !== undefined) return e
  let found: Route | null = null
  if (v.prefix.size > 0) {
    let k = p.length > 1 && p.charCodeAt(p.length - 1) === 47 ? p.slice(0, -1) : p
    for (;;) {
      const r = v.prefix.get(k)
      if (r !== undefined) {
        found = r
        break
      }
      if (k === '/') break
      const i = k.lastIndexOf('/')
      k = i === 0 ? '/' : k.slice(0, i)
    }
  }
  if (v.regex.length > 0) {
    const L = found === null ? -1 : found.key === '/' ? 0 : found.key.length
    for (const r of v.regex) {
      if (matchLength(r.regex!, p) > L) return r
    }
  }
  return found
}

/** Route for (host, path): the vhost's route, else the default backend, else null (404). */
export function route(t: RouteTable, host: string, path: string): Route | null {
  const v = pickVHost(t, host)
  if (v !== null) {
    const r = pickRoute(v, path)
    if (r !== null) return r
  }
  return t.defaultRoute
}

// ---------------------------------------------------------------- compilation

export type IngressState = 'accepted' | 'rejected' | 'ignored'

export interface IngressStatus {
  readonly ingress: string
  state: IngressState
  readonly source: string
  /** MLT_PROXY_INGRESS_INVALID when rejected, so /status readers branch on it; null when accepted or ignored. */
  code: ProxyErrorCode | null
  /** Why it is rejected or ignored. */
  readonly reasons: string[]
  /** Non-fatal problems: unparsable annotation values, conflicts lost, missing Services. */
  readonly warnings: string[]
  readonly unknownAnnotations: string[]
  /** True when the current version is rejected and the last good version keeps serving. */
  servingLastGood: boolean
}

export interface RouteStatus {
  readonly host: string
  readonly path: string
  readonly kind: RouteKind
  readonly ingress: string
  readonly service: string
  readonly endpoints: number
  readonly error: string | null
  /** MLT_PROXY_NO_ENDPOINTS when the route answers 503 (its Service, port or ready endpoints are missing). */
  readonly code: ProxyErrorCode | null
  readonly canary: string | null
}

export interface CompileInput {
  readonly snapshot: Snapshot
  readonly ingressClass: string
  readonly pathOptions: PathOptions
  readonly endpoints: EndpointRegistry
  readonly metrics: ProxyMetrics
  readonly contexts: SecureContextCache
  /** Last accepted version of each Ingress, by key: served when the current version is rejected (§1.2). */
  readonly lastGood: Map<string, Ingress>
  /** The previous compile's backends (CompileResult.backends): reused while their Service is the same object. */
  readonly reuse?: ReadonlyMap<string, ReusedBackend>
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
  readonly routes: RouteStatus[]
  readonly conflicts: string[]
  readonly notes: string[]
  /** Every backend of this table, for the next compile to reuse. */
  readonly backends: Map<string, ReusedBackend>
}

const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/

export function validHost(host: string): string | null {
  const name = host.startsWith('*.') ? host.slice(2) : host
  if (name.includes('*')) return 'a wildcard is only allowed as the whole first label ("*.example.com")'
  if (/^[0-9.]+$/.test(name) || name.includes(':')) return 'must be a DNS name, not an IP address'
  if (name.length > 253 || !DNS1123_SUBDOMAIN.test(name)) return 'must be a lowercase RFC 1123 subdomain'
  if (name.split('.').some((l) => l.length > 63)) return 'each label must be at most 63 characters'
  return null
}

/** API-server path checks for Exact and Prefix (kubernetes validation.go), plus a leading "/". */
export function validPath(path: string): string | null {
  if (!path.startsWith('/')) return 'must be an absolute path'
  for (const bad of ['//', '/./', '/../', '%2f', '%2F']) if (path.includes(bad)) return `must not contain '${bad}'`
  if (path.endsWith('/..') || path.endsWith('/.')) return "must not end with '/..' or '/.'"
  if (path.includes('#')) return "must not contain '#'"
  return null
}

/** §1.1: is this Ingress meshlet's? Returns null when served, else the reason it is ignored. */
export function classReason(ing: Ingress, snapshot: Snapshot, ingressClass: string): string | null {
  const cls = ing.spec.ingressClassName
  if (cls !== null) {
    if (cls === ingressClass) return null
    const ic = snapshot.ingressClasses.find((c) => c.meta.name === cls)
    if (ic && ic.controller === CONTROLLER_ID) return null
    return `ingress class "${cls}" is not meshlet's ("${ingressClass}", or an IngressClass with controller ${CONTROLLER_ID})`
  }
  if (snapshot.ingressClasses.length === 0) return null
  const dflt = snapshot.ingressClasses.find(
    (c) => c.isDefault && (c.controller === CONTROLLER_ID || c.meta.name === ingressClass),
  )
  if (dflt) return null
  return 'no ingress class, and no default IngressClass points at meshlet'
}

interface Candidate {
  readonly route: Route
  readonly ruleIndex: number
  readonly pathIndex: number
}

export function compile(input: CompileInput): CompileResult {
  const { snapshot } = input
  const services = new Map<string, ServiceState>()
  for (const s of snapshot.services) services.set(s.key, s)
  const secrets = new Map<string, Secret>()
  for (const s of snapshot.secrets) secrets.set(objectKey(s.meta), s)

  const live = new Set<Endpoint>()
  const groups = new Map<string, Backend>()
  const backends = new Map<string, ReusedBackend>()
  const ingresses: IngressStatus[] = []
  const conflicts: string[] = []
  const notes: string[] = []

  const exact = new Map<string, VHost>()
  const wild = new Map<string, VHost>()
  let catchAll: VHost | null = null
  let defaultRoute: Route | null = null
  const tlsExact = new Map<string, SecureContext>()
  const tlsWildCtx = new Map<string, SecureContext>()
  const tlsHostNames: Record<string, string> = {}
  const tlsHosts = new Set<string>()
  const tlsWild = new Set<string>()
  let fallback: SecureContext | null = null
  let fallbackName: string | null = null

  const vhostFor = (host: string): VHost => {
    const make = (): VHost => ({ host, exact: new Map(), prefix: new Map(), regex: [], tls: false })
    if (host === '') return (catchAll ??= make())
    const map = host.startsWith('*.') ? wild : exact
    const key = host.startsWith('*.') ? host.slice(2) : host
    let v = map.get(key)
    if (!v) map.set(key, (v = make()))
    return v
  }

  const resolveBackend = (ns: string, b: IngressServiceBackend, config: IngressConfig, warnings: string[]): Backend => {
    const svcKey = `${ns}/${b.service.name}`
    const portText = b.service.port.name ?? String(b.service.port.number)
    const label = `${svcKey}:${portText}`
    const cacheKey = `${label}|${config.connectTimeoutMs}`
    const cached = groups.get(cacheKey)
    if (cached) return cached
    const svc = services.get(svcKey)
    // Snapshots share unchanged ServiceStates: the same one resolves to the same backend (no new group, no lookups).
    const old = input.reuse?.get(cacheKey)
    if (old && old.svc === svc) {
      for (const ep of old.eps) live.add(ep)
      warnings.push(...old.warnings)
      groups.set(cacheKey, old.backend)
      backends.set(cacheKey, old)
      return old.backend
    }
    const warnedBefore = warnings.length
    let made: Endpoint[] = []
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
          warnings.push(
            `backend ${label}: no Service port ${portText}; using the port whose targetPort is ${portText} (ingress-nginx compatibility)`,
          )
      }
      if (svc.service.spec.type === 'ExternalName' && svc.service.spec.externalName) {
        const num = port?.port ?? b.service.port.number
        if (num === null || num === undefined) {
          backend = { service: svcKey, label, group: null, error: `ExternalName Service ${svcKey} needs a port number` }
        } else {
          const ep = input.endpoints.get(svc.service.spec.externalName, num, config.connectTimeoutMs)
          live.add(ep)
          made = [ep]
          backend = { service: svcKey, label, group: new UpstreamGroup(svcKey, label, [ep]), error: null }
        }
      } else if (!port) {
        backend = { service: svcKey, label, group: null, error: `Service ${svcKey} has no port ${portText}` }
      } else if (port.protocol !== 'TCP') {
        backend = { service: svcKey, label, group: null, error: `Service port ${label} is ${port.protocol}, not TCP` }
      } else {
        const eps = usableEndpoints(port).map((e) => input.endpoints.get(e.ip, e.port, config.connectTimeoutMs))
        for (const ep of eps) live.add(ep)
        made = eps
        backend = { service: svcKey, label, group: new UpstreamGroup(svcKey, label, eps), error: null }
      }
    }
    if (backend.error) warnings.push(backend.error)
    groups.set(cacheKey, backend)
    backends.set(cacheKey, { svc, backend, eps: made, warnings: warnings.slice(warnedBefore) })
    return backend
  }

  /** §1.2 checks; returns the reasons to reject, empty when valid. */
  const validate = (ing: Ingress, config: IngressConfig, annotationErrors: string[]): string[] => {
    const reasons = [...annotationErrors]
    const ns = ing.meta.namespace
    if (ing.spec.rules.length === 0 && ing.spec.defaultBackend === null)
      reasons.push('spec: either rules or defaultBackend is required')
    ing.spec.rules.forEach((rule, ri) => {
      if (rule.host !== null) {
        const why = validHost(rule.host)
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
          const why =
            validPath(p.path) ??
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
        const why = validHost(h)
        if (why) reasons.push(`spec.tls[${ti}].hosts[${hi}]: "${h}" ${why}`)
      })
      if (t.secretName === null) return
      const secret = secrets.get(`${ns}/${t.secretName}`)
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

  const primaries: Candidate[] = []
  const canaries: Candidate[] = []
  const sorted = [...snapshot.ingresses].sort((a, b) => cmp(objectKey(a.meta), objectKey(b.meta)))
  const seenKeys = new Set<string>()

  for (const current of sorted) {
    const key = objectKey(current.meta)
    seenKeys.add(key)
    const status: IngressStatus = {
      ingress: key,
      state: 'accepted',
      source: `${current.meta.source.file} doc ${current.meta.source.doc}`,
      code: null,
      reasons: [],
      warnings: [],
      unknownAnnotations: [],
      servingLastGood: false,
    }
    ingresses.push(status)
    const ignored = classReason(current, snapshot, input.ingressClass)
    if (ignored) {
      status.state = 'ignored'
      status.reasons.push(ignored)
      input.lastGood.delete(key)
      continue
    }
    let ing = current
    let parsed = parseAnnotations(ing.meta.annotations)
    const reasons = validate(ing, parsed.config, parsed.errors)
    if (reasons.length > 0) {
      status.state = 'rejected'
      status.code = 'MLT_PROXY_INGRESS_INVALID'
      status.reasons.push(...reasons)
      const last = input.lastGood.get(key)
      if (!last || last === current) continue
      const lastParsed = parseAnnotations(last.meta.annotations)
      if (validate(last, lastParsed.config, lastParsed.errors).length > 0) continue
      ing = last
      parsed = lastParsed
      status.servingLastGood = true
    } else {
      input.lastGood.set(key, current)
    }
    status.warnings.push(...parsed.warnings)
    status.unknownAnnotations.push(...parsed.unknown)
    const config = parsed.config
    const ns = ing.meta.namespace
    const isCanary = config.canary !== null

    ing.spec.rules.forEach((rule, ri) => {
      const host = rule.host?.toLowerCase() ?? ''
      if (!isCanary) vhostFor(host) // a rule without paths still makes its vhost (§1.3.9)
      rule.paths.forEach((p, pi) => {
        const backend = resolveBackend(ns, p.backend, config, status.warnings)
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

    if (ing.spec.defaultBackend !== null) {
      const backend = resolveBackend(ns, ing.spec.defaultBackend, config, status.warnings)
      if (isCanary) status.warnings.push('spec.defaultBackend of a canary Ingress is ignored')
      else if (defaultRoute === null) {
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
      } else {
        const msg = `spec.defaultBackend of ${key} loses to ${defaultRoute.ingress} (older or first by namespace/name)`
        conflicts.push(msg)
        status.warnings.push(msg)
      }
    }

    if (!isCanary) {
      for (const t of ing.spec.tls) {
        const secretKey = t.secretName === null ? null : `${ns}/${t.secretName}`
        const ctx = secretKey === null ? null : input.contexts.get(secretKey, secrets.get(secretKey)!.tls!)
        if (t.hosts.length === 0) {
          if (ctx && fallback === null) {
            fallback = ctx
            fallbackName = secretKey
          }
          continue
        }
        for (const raw of t.hosts) {
          const h = raw.toLowerCase()
          if (h.startsWith('*.')) {
            tlsWild.add(h.slice(2))
            if (ctx && !tlsWildCtx.has(h.slice(2))) tlsWildCtx.set(h.slice(2), ctx)
          } else {
            tlsHosts.add(h)
            if (ctx && !tlsExact.has(h)) tlsExact.set(h, ctx)
          }
          if (!(h in tlsHostNames)) tlsHostNames[h] = secretKey ?? '(default certificate)'
        }
      }
    }
  }
  for (const k of input.lastGood.keys()) if (!seenKeys.has(k)) input.lastGood.delete(k)

  // §1.3.6 conflicts: the first inserted wins (Ingresses are processed by namespace/name, then rule and path index);
  // Prefix "/foo/" beats "/foo" whatever the order (the API doc gives the trailing slash priority).
  const byIngress = new Map(ingresses.map((s) => [s.ingress, s]))
  const lose = (loser: Route, winner: Route) => {
    const msg = `${loser.ingress}: ${loser.kind} ${loser.host || '*'}${loser.path} loses to ${winner.ingress} (same host and path)`
    conflicts.push(msg)
    byIngress.get(loser.ingress)?.warnings.push(msg)
  }
  for (const { route } of primaries) {
    const v = vhostFor(route.host)
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
  for (const v of [...exact.values(), ...wild.values(), ...(catchAll ? [catchAll as VHost] : [])]) {
    // nginx checks regex locations longest first (ingress-nginx sorts them by length).
    v.regex.sort((a, b) => b.key.length - a.key.length)
  }
  for (const { route } of canaries) {
    const v =
      route.host === '' ? catchAll : route.host.startsWith('*.') ? wild.get(route.host.slice(2)) : exact.get(route.host)
    const primary = v
      ? route.kind === 'Regex'
        ? v.regex.find((r) => r.key === route.key)
        : (route.kind === 'Exact' ? v.exact : v.prefix).get(route.key)
      : undefined
    const st = byIngress.get(route.ingress)
    if (!primary)
      st?.warnings.push(
        `canary path ${route.host || '*'}${route.path} has no primary Ingress path to attach to; not served`,
      )
    else if (primary.canary)
      st?.warnings.push(
        `canary path ${route.host || '*'}${route.path}: ${primary.canary.ingress} is already its canary`,
      )
    else primary.canary = route
  }

  // TLS-enabled vhosts (§1.3.10).
  for (const [host, v] of exact) {
    const dot = host.indexOf('.')
    v.tls = tlsHosts.has(host) || (dot > 0 && tlsWild.has(host.slice(dot + 1)))
  }
  for (const [suffix, v] of wild) v.tls = tlsWild.has(suffix)

  if (snapshot.ingressClasses.length === 0 && sorted.some((i) => i.spec.ingressClassName === null)) {
    notes.push('no IngressClass objects: Ingresses without a class are served by meshlet')
  }

  const routes: RouteStatus[] = []
  const describe = (r: Route): RouteStatus => {
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
  for (const v of [...exact.values(), ...wild.values(), ...(catchAll ? [catchAll as VHost] : [])]) {
    for (const r of [...v.exact.values(), ...v.prefix.values(), ...v.regex]) routes.push(describe(r))
  }
  if (defaultRoute) routes.push(describe(defaultRoute))

  const tls: TlsIndex = {
    exact: tlsExact,
    wild: tlsWildCtx,
    fallback,
    hosts: { ...tlsHostNames, ...(fallbackName ? { '(default)': fallbackName } : {}) },
  }
  return {
    table: { exact, wild, catchAll, defaultRoute, tls, tlsHosts, tlsWild },
    live,
    ingresses,
    routes,
    conflicts,
    notes,
    backends,
  }
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}
