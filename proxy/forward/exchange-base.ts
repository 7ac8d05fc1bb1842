// One downstream request and its upstream attempts, whatever the engine: the route, the headers to send, endpoint
// choice with affinity and retries, and the accounting when it ends (metrics, access log, passive health).

import { hostWithoutPort } from '../http/normalize.ts'
import { matchGroups } from '../routes/regex.ts'
import { type Route } from '../routes/route-table.ts'
import { type Endpoint } from '../upstream.ts'
import type { Forwarder, ListenerInfo, Prepared } from './forwarder.ts'
import { cookieValue } from '../http/headers.ts'

/**
 * One downstream request and its upstream attempts, engine-independent: the route, the headers to send, endpoint
 * choice with affinity and retries, accounting. Every field set here (stable shape).
 */
export class ExchangeBase {
  readonly fwd: Forwarder
  readonly li: ListenerInfo
  readonly method: string
  readonly route: Route
  readonly headers: string[]
  readonly requestId: string
  readonly host: string
  readonly hostHeader: string
  readonly path: string
  readonly query: string
  readonly cookieHeader: string | undefined
  readonly contentLength: string | null
  readonly chunked: boolean
  readonly tlsVhost: boolean
  readonly start: number
  /** The endpoint of the attempt in flight (counted in its `inflight`); null between attempts. */
  endpoint: Endpoint | null = null
  /** The endpoint of the last attempt (logs). */
  upstream: Endpoint | null = null
  counted = false
  tried1: Endpoint | null = null
  tried2: Endpoint | null = null
  tries = 0
  setCookie: string | null = null
  status = 0
  bytes = 0
  upstreamStart = 0
  upstreamHeaders = 0
  done = false

  constructor(fwd: Forwarder, li: ListenerInfo, method: string, p: Prepared) {
    this.fwd = fwd
    this.li = li
    this.method = method
    this.route = p.route
    this.headers = p.headers
    this.requestId = p.requestId
    this.host = p.host
    this.hostHeader = p.hostHeader
    this.path = p.path
    this.query = p.query
    this.cookieHeader = p.cookie
    this.contentLength = p.contentLength
    this.chunked = p.chunked
    this.tlsVhost = p.tlsVhost
    this.start = performance.now()
  }

  /** The path and query sent upstream: the normalised path, or the rewrite-target result (§4.1). */
  upstreamPath(): string {
    const target = this.route.config.rewriteTarget
    if (target === null) return this.query === '' ? this.path : this.path + this.query
    const m = this.route.regex === null ? null : matchGroups(this.route.regex, this.path)
    const rewritten = target.replace(/\$(\d)/g, (_s, d: string) => (m !== null ? (m[Number(d)] ?? '') : ''))
    return rewritten + this.query
  }

  /** ssl-redirect / force-ssl-redirect: the Location to answer 308 with, or null. `rawUrl` is the target as sent. */
  redirectLocation(rawUrl: string): string | null {
    const cfg = this.route.config
    if (this.li.scheme !== 'http' || !(cfg.forceSslRedirect || (cfg.sslRedirect && this.tlsVhost))) return null
    const pathAndQuery = rawUrl.charCodeAt(0) === 47 ? rawUrl : this.path + this.query
    const port = this.fwd.httpsPort === null || this.fwd.httpsPort === 443 ? '' : `:${this.fwd.httpsPort}`
    return `https://${hostWithoutPort(this.hostHeader)}${port}${pathAndQuery}`
  }

  /** A Content-Length over proxy-body-size (→ 413 before anything is sent). */
  declaredTooLarge(): boolean {
    const limit = this.route.config.bodySizeLimit
    return limit > 0 && this.contentLength !== null && Number(this.contentLength) > limit
  }

  /** The first endpoint: the affinity cookie's if it is still there, else the balancing policy's. */
  firstEndpoint(): Endpoint | null {
    const group = this.route.backend.group
    if (group === null) return null
    const cfg = this.route.config
    const aff = cfg.affinity
    if (aff === null) return group.pick(cfg.loadBalance, null, null)
    const v = cookieValue(this.cookieHeader, aff.name)
    let ep = v === null ? null : group.byCookie(v)
    if (ep === null) {
      ep = group.pick(cfg.loadBalance, null, null)
      if (ep !== null) this.setCookie = this.cookieFor(ep)
    }
    return ep
  }

  /** Another endpoint after `failed` failed, avoiding the ones tried; null when none is left. */
  nextEndpoint(failed: Endpoint): Endpoint | null {
    if (this.tried1 === null) this.tried1 = failed
    else this.tried2 = failed
    const next = this.route.backend.group!.pick(this.route.config.loadBalance, this.tried1, this.tried2)
    if (next !== null && this.route.config.affinity !== null) this.setCookie = this.cookieFor(next)
    return next
  }

  cookieFor(ep: Endpoint): string {
    const a = this.route.config.affinity!
    let c = `${a.name}=${ep.cookie}; Path=${a.path ?? (this.route.kind === 'Default' || this.route.kind === 'Regex' ? '/' : this.route.path)}; HttpOnly`
    if (a.maxAge !== null) c += `; Max-Age=${a.maxAge}`
    if (a.expires !== null) c += `; Expires=${new Date(Date.now() + a.expires * 1000).toUTCString()}`
    if (a.sameSite !== null) c += `; SameSite=${a.sameSite}`
    if (a.secure || (a.sameSite !== null && a.sameSite.toLowerCase() === 'none' && this.li.scheme === 'https'))
      c += '; Secure'
    return c
  }

  /** Marks the start of an attempt on `ep`. */
  attempt(ep: Endpoint): void {
    this.endpoint = ep
    this.upstream = ep
    this.tries++
    ep.inflight++
    this.upstreamStart = performance.now()
  }

  release(): void {
    const ep = this.endpoint
    if (ep !== null) {
      ep.inflight--
      this.endpoint = null
    }
  }

  logUpstreamError(err: Error): void {
    const log = this.fwd.log
    if (log.isLevelEnabled('debug'))
      log.debug({ err, upstream: this.upstream?.key, service: this.route.backend.label }, 'upstream request failed')
  }

  finish(status: number): void {
    if (this.done) return
    this.done = true
    this.release()
    if (this.counted) this.fwd.inflight--
    const ep = this.upstream
    const now = performance.now()
    const seconds = (now - this.start) / 1000
    this.route.stats.observe(status, seconds)
    const access = this.fwd.access
    if (access !== null) {
      access.info(
        {
          method: this.method,
          host: this.host,
          path: this.path,
          status,
          ingress: this.route.ingress,
          service: this.route.backend.label,
          upstream: ep === null ? null : `${ep.host}:${ep.port}`,
          duration: seconds,
          upstreamDuration: this.upstreamHeaders > 0 ? (this.upstreamHeaders - this.upstreamStart) / 1000 : null,
          bytesIn: this.contentLength === null ? 0 : Number(this.contentLength),
          bytesOut: this.bytes,
          requestId: this.requestId,
          tries: this.tries,
        },
        'request',
      )
    }
  }
}
