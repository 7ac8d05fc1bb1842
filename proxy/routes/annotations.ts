// ingress-nginx annotations meshlet honours (specs/ingress.md §4.1), parsed once per Ingress at snapshot time into
// a fixed-shape IngressConfig. A value that does not parse keeps the default and is reported as a warning (what
// ingress-nginx does with an invalid annotation); an annotation under the nginx prefix that meshlet does not
// implement is listed in /status as unknown, never silently dropped.

import { compileRegex, type UserRegex } from './regex.ts'

export const NGINX_PREFIX = 'nginx.ingress.kubernetes.io/'

export interface AffinityConfig {
  /** session-cookie-name, default INGRESSCOOKIE. */
  readonly name: string
  /** session-cookie-path; null: the path of the Ingress rule that matched (ingress-nginx's default). */
  readonly path: string | null
  /** session-cookie-max-age in seconds; null: a session cookie. */
  readonly maxAge: number | null
  /** session-cookie-expires in seconds from now; null: none. */
  readonly expires: number | null
  /** session-cookie-samesite: None | Lax | Strict; null: not sent. */
  readonly sameSite: string | null
  /** session-cookie-secure: "true" adds Secure (also added automatically on the https listener with SameSite=None). */
  readonly secure: boolean
}

export interface CanaryConfig {
  /** canary-by-header: the header name (lowercase); null: no header rule. */
  readonly header: string | null
  /** canary-by-header-value: exact value sending to the canary; null: "always"/"never" semantics. */
  readonly headerValue: string | null
  /** canary-by-header-pattern: anchored regex over the header value (used when headerValue is null). */
  readonly headerPattern: UserRegex | null
  /** canary-by-cookie: cookie name whose value "always"/"never" decides. */
  readonly cookie: string | null
  /** canary-weight of canary-weight-total (default 100). 0: never by weight. */
  readonly weight: number
  readonly weightTotal: number
}

export type LoadBalance = 'round_robin' | 'least_request'

export interface IngressConfig {
  /** proxy-connect-timeout, ms; default 5 s. */
  readonly connectTimeoutMs: number
  /** proxy-read-timeout, ms; default 60 s: time to the response head, and between two body reads. */
  readonly readTimeoutMs: number
  /**
   * proxy-send-timeout, ms; default 60 s: how long the endpoint may leave a request-body write unaccepted (its
   * receive window stays full) before the attempt fails with 504 — ingress-nginx's "between two successive write
   * operations". Time spent waiting for the client to send more body does not count.
   */
  readonly sendTimeoutMs: number
  /**
   * client-body-timeout, ms; default 60 s (ingress-nginx's `client-body-timeout`): how long the client may send no
   * request-body bytes while meshlet is ready to read them → 408 and both connections closed. Time the endpoint
   * keeps meshlet from reading (backpressure) does not count.
   */
  readonly clientBodyTimeoutMs: number
  /** Idle limit of an upgraded (WebSocket) connection: proxy-read-timeout when annotated, else 1 h. */
  readonly tunnelIdleMs: number
  /** proxy-body-size in bytes; default 1m; 0 = unlimited. Over → 413. */
  readonly bodySizeLimit: number
  /** ssl-redirect (default true): HTTP requests for a TLS-enabled host get 308 to https. */
  readonly sslRedirect: boolean
  /** force-ssl-redirect (default false): redirect even without TLS for the host. */
  readonly forceSslRedirect: boolean
  /** use-regex: ImplementationSpecific paths of this Ingress are case-insensitive regexes anchored at the start. */
  readonly useRegex: boolean
  /** rewrite-target: the upstream path template ($1..$9 from the regex captures); null: forward the matched path. */
  readonly rewriteTarget: string | null
  readonly affinity: AffinityConfig | null
  /** load-balance: round_robin (default) or ewma, which meshlet implements as least-request (power of two choices). */
  readonly loadBalance: LoadBalance
  /** proxy-next-upstream-tries (default 3); proxy-next-upstream "off" makes it 1. */
  readonly tries: number
  /** canary: "true" plus its rules; null for a primary Ingress. */
  readonly canary: CanaryConfig | null
}

export const DEFAULT_CONFIG: IngressConfig = {
  connectTimeoutMs: 5000,
  readTimeoutMs: 60000,
  sendTimeoutMs: 60000,
  clientBodyTimeoutMs: 60000,
  tunnelIdleMs: 3600_000,
  bodySizeLimit: 1024 * 1024,
  sslRedirect: true,
  forceSslRedirect: false,
  useRegex: false,
  rewriteTarget: null,
  affinity: null,
  loadBalance: 'round_robin',
  tries: 3,
  canary: null,
}

const KNOWN = new Set([
  'proxy-connect-timeout',
  'proxy-read-timeout',
  'proxy-send-timeout',
  'client-body-timeout',
  'proxy-body-size',
  'ssl-redirect',
  'force-ssl-redirect',
  'use-regex',
  'rewrite-target',
  'affinity',
  'session-cookie-name',
  'session-cookie-path',
  'session-cookie-max-age',
  'session-cookie-expires',
  'session-cookie-samesite',
  'session-cookie-secure',
  'load-balance',
  'proxy-next-upstream',
  'proxy-next-upstream-tries',
  'canary',
  'canary-by-header',
  'canary-by-header-value',
  'canary-by-header-pattern',
  'canary-by-cookie',
  'canary-weight',
  'canary-weight-total',
])

export interface ParsedAnnotations {
  readonly config: IngressConfig
  /** Values that did not parse (the default is used instead). */
  readonly warnings: string[]
  /** nginx.ingress.kubernetes.io/* keys meshlet does not implement. */
  readonly unknown: string[]
  /** Errors that reject the whole Ingress (an unsafe or invalid regex). */
  readonly errors: string[]
}

function seconds(v: string): number | null {
  const m = /^(\d{1,6})s?$/.exec(v.trim())
  return m ? Number(m[1]) * 1000 : null
}

/** nginx size syntax: "1m", "8k", "1g", "512" (bytes); "0" = unlimited. */
export function parseSize(v: string): number | null {
  const m = /^(\d{1,12})([kKmMgG]?)$/.exec(v.trim())
  if (!m) return null
  const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g']
  return Number(m[1]) * mult
}

function bool(v: string): boolean | null {
  const t = v.trim().toLowerCase()
  if (t === 'true') return true
  if (t === 'false') return false
  return null
}

export function parseAnnotations(annotations: Readonly<Record<string, string>>): ParsedAnnotations {
  const warnings: string[] = []
  const unknown: string[] = []
  const errors: string[] = []
  const get = (k: string): string | undefined => annotations[NGINX_PREFIX + k]
  for (const key of Object.keys(annotations)) {
    if (key.startsWith(NGINX_PREFIX) && !KNOWN.has(key.slice(NGINX_PREFIX.length))) unknown.push(key)
  }
  const num = (k: string, parse: (v: string) => number | null, dflt: number): number => {
    const v = get(k)
    if (v === undefined) return dflt
    const n = parse(v)
    if (n === null) {
      warnings.push(`${NGINX_PREFIX}${k}: cannot parse "${v}", using the default`)
      return dflt
    }
    return n
  }
  const flag = (k: string, dflt: boolean): boolean => {
    const v = get(k)
    if (v === undefined) return dflt
    const b = bool(v)
    if (b === null) {
      warnings.push(`${NGINX_PREFIX}${k}: expected "true" or "false", got "${v}"`)
      return dflt
    }
    return b
  }
  const int = (v: string): number | null => (/^\d{1,9}$/.test(v.trim()) ? Number(v) : null)

  const connectTimeoutMs = num('proxy-connect-timeout', seconds, DEFAULT_CONFIG.connectTimeoutMs)
  const readTimeoutMs = num('proxy-read-timeout', seconds, DEFAULT_CONFIG.readTimeoutMs)
  const sendTimeoutMs = num('proxy-send-timeout', seconds, DEFAULT_CONFIG.sendTimeoutMs)
  const clientBodyTimeoutMs = num('client-body-timeout', seconds, DEFAULT_CONFIG.clientBodyTimeoutMs)
  const tunnelIdleMs = get('proxy-read-timeout') !== undefined ? readTimeoutMs : DEFAULT_CONFIG.tunnelIdleMs
  const bodySizeLimit = num('proxy-body-size', parseSize, DEFAULT_CONFIG.bodySizeLimit)
  const useRegex = flag('use-regex', false)
  const rewriteTarget = get('rewrite-target') ?? null
  if (rewriteTarget !== null && !rewriteTarget.startsWith('/') && !/^https?:\/\//.test(rewriteTarget)) {
    errors.push(`${NGINX_PREFIX}rewrite-target: must start with "/", got "${rewriteTarget}"`)
  }

  let affinity: AffinityConfig | null = null
  const aff = get('affinity')
  if (aff !== undefined) {
    if (aff !== 'cookie') warnings.push(`${NGINX_PREFIX}affinity: only "cookie" is supported, got "${aff}"`)
    else {
      const sameSite = get('session-cookie-samesite') ?? null
      if (sameSite !== null && !/^(None|Lax|Strict)$/i.test(sameSite)) {
        warnings.push(`${NGINX_PREFIX}session-cookie-samesite: expected None, Lax or Strict, got "${sameSite}"`)
      }
      const name = get('session-cookie-name') ?? 'INGRESSCOOKIE'
      affinity = {
        name: /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name) ? name : 'INGRESSCOOKIE',
        path: get('session-cookie-path') ?? null,
        maxAge: get('session-cookie-max-age') !== undefined ? num('session-cookie-max-age', int, 0) : null,
        expires: get('session-cookie-expires') !== undefined ? num('session-cookie-expires', int, 0) : null,
        sameSite: sameSite !== null && /^(None|Lax|Strict)$/i.test(sameSite) ? sameSite : null,
        secure: flag('session-cookie-secure', false),
      }
    }
  }

  let loadBalance: LoadBalance = 'round_robin'
  const lb = get('load-balance')
  if (lb === 'ewma' || lb === 'least_request') loadBalance = 'least_request'
  else if (lb !== undefined && lb !== 'round_robin') {
    warnings.push(`${NGINX_PREFIX}load-balance: expected round_robin or ewma, got "${lb}"`)
  }

  let tries = num('proxy-next-upstream-tries', int, DEFAULT_CONFIG.tries)
  if (tries < 1) tries = 1
  if (tries > 10) tries = 10
  const next = get('proxy-next-upstream')
  if (next !== undefined) {
    const tokens = next.trim().split(/\s+/)
    if (tokens.includes('off')) tries = 1
    for (const t of tokens) {
      if (t !== 'off' && t !== 'error' && t !== 'timeout' && t !== 'non_idempotent') {
        warnings.push(
          `${NGINX_PREFIX}proxy-next-upstream: "${t}" is not supported (meshlet retries on error and timeout)`,
        )
      }
    }
  }

  let canary: CanaryConfig | null = null
  if (flag('canary', false)) {
    const pattern = get('canary-by-header-pattern') ?? null
    let headerPattern: UserRegex | null = null
    if (pattern !== null) {
      // The whole value must match (ingress-nginx anchors it); run by the linear-time engine like use-regex paths.
      const re = compileRegex(pattern, false)
      if (typeof re === 'string') errors.push(`${NGINX_PREFIX}canary-by-header-pattern: ${re}`)
      else headerPattern = re
    }
    const weightTotal = Math.max(1, num('canary-weight-total', int, 100))
    canary = {
      header: get('canary-by-header')?.toLowerCase() ?? null,
      headerValue: get('canary-by-header-value') ?? null,
      headerPattern,
      cookie: get('canary-by-cookie') ?? null,
      weight: Math.min(weightTotal, num('canary-weight', int, 0)),
      weightTotal,
    }
  }

  return {
    config: {
      connectTimeoutMs,
      readTimeoutMs,
      sendTimeoutMs,
      clientBodyTimeoutMs,
      tunnelIdleMs,
      bodySizeLimit,
      sslRedirect: flag('ssl-redirect', true),
      forceSslRedirect: flag('force-ssl-redirect', false),
      useRegex,
      rewriteTarget,
      affinity,
      loadBalance,
      tries,
      canary,
    },
    warnings,
    unknown,
    errors,
  }
}
