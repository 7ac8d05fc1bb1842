// The route table's shape, the per-request lookups (§1.5, §1.6: they only read Maps) and the class rule (§1.1).
// The table is compiled from each Snapshot by compile.ts (specs/ingress.md §1.1–§1.3) and swapped as one reference.
//
//   RouteTable ─ exact: Map<host, VHost>      VHost ─ exact:  Map<path, Route>
//              ─ wild:  Map<suffix, VHost>          ─ prefix: Map<key, Route>   (key = path minus one trailing "/")
//              ─ catchAll: VHost | null             ─ regex:  Route[]           (use-regex, longest pattern first)
//              ─ defaultRoute: Route | null
//              ─ tls: TlsIndex (SNI)

import type { Ingress } from '../../model/objects.ts'
import type { Snapshot } from '../../model/snapshot.ts'
import type { ProxyErrorCode } from '../errors.ts'
import type { RouteStats } from '../metrics.ts'
import { EMPTY_TLS, type TlsIndex } from '../tls.ts'
import type { UpstreamGroup } from '../upstream.ts'
import type { IngressConfig } from './annotations.ts'
import { matchLength, type UserRegex } from './regex.ts'

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
