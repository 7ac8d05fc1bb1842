// The request path shared by every engine up to the route: normalise (spec §1.4), match (§1.5–1.6), build the
// headers to send (§1.8), decide redirect and canary. `Forwarder.prepare` works on a plain RequestHead, so it serves
// node:http, node:http2 and the raw HTTP/1.1 engine (h1/) alike; one request's state after that is an ExchangeBase
// (exchange-base.ts), specialised per engine (node-exchange.ts, h1/exchange.ts).

import type { Logger } from 'pino'
import { randomBytes } from 'node:crypto'
import type { Socket } from 'node:net'
import type { Cidr } from '../../model/ip.ts'
import { cidrContains } from '../../model/ip.ts'
import type { UpstreamReporter } from '../../model/snapshot.ts'
import type { CanaryConfig } from '../routes/annotations.ts'
import type { ProxyMetrics } from '../metrics.ts'
import { normalizeHost, parseTarget, type PathOptions, type Target } from '../http/normalize.ts'
import { EMPTY_TABLE, pickRoute, pickVHost, type Route, type RouteTable } from '../routes/route-table.ts'
import {
  classify,
  cookieValue,
  eqLower,
  headerValue,
  isChunkedOnly,
  H_AUTHORITY,
  H_CONNECTION,
  H_CONTENT_LENGTH,
  H_COOKIE,
  H_EXPECT,
  H_HOST,
  H_KEEP,
  H_REQUEST_ID,
  H_TRANSFER_ENCODING,
  H_UPGRADE,
  H_XFF,
  H_XF_HOST,
  H_XF_PORT,
  H_XF_PROTO,
} from '../http/headers.ts'

/** What `prepare` reads of a request: an IncomingMessage, an Http2ServerRequest or the raw engine's head. */
export interface RequestHead {
  readonly method: string
  readonly url: string
  readonly rawHeaders: readonly string[]
  readonly httpVersionMajor: number
  readonly httpVersionMinor: number
}

/** What a listener adds to forwarded requests. */
export interface ListenerInfo {
  readonly name: 'http' | 'https'
  readonly scheme: 'http' | 'https'
  /** The port the listener is bound to, as text (X-Forwarded-Port). */
  port: string
}

export interface ForwarderOptions {
  readonly log: Logger
  readonly accessLog: boolean
  readonly trustForwardedFrom: readonly Cidr[]
  readonly reporter: UpstreamReporter
  readonly metrics: ProxyMetrics
  readonly pathOptions: PathOptions
}

function useCanary(c: CanaryConfig, req: RequestHead, cookieHeader: string | undefined): boolean {
  if (c.header !== null) {
    const v = headerValue(req.rawHeaders, c.header)
    if (typeof v === 'string') {
      if (c.headerValue !== null) {
        if (v === c.headerValue) return true
      } else if (c.headerPattern !== null) {
        if (c.headerPattern.testExact(v)) return true
      } else if (v === 'always') return true
      else if (v === 'never') return false
    }
  }
  if (c.cookie !== null) {
    const v = cookieValue(cookieHeader, c.cookie)
    if (v === 'always') return true
    if (v === 'never') return false
  }
  return c.weight > 0 && Math.random() * c.weightTotal < c.weight
}

/** The result of `Forwarder.prepare`; one scratch object per Forwarder, copied into the exchange. */
export interface Prepared {
  route: Route
  headers: string[]
  requestId: string
  host: string
  /** The Host header as sent (redirects keep its case), else the authority used. */
  hostHeader: string
  path: string
  query: string
  cookie: string | undefined
  contentLength: string | null
  chunked: boolean
  tlsVhost: boolean
  /** The Expect header, lowercased; null when absent. */
  expect: string | null
}

export class Forwarder {
  /** The current route table; replaced whole with each Snapshot. */
  table: RouteTable = EMPTY_TABLE
  /** Port of the https listener, for redirects; null when it is off. */
  httpsPort: number | null = null
  readonly log: Logger
  readonly access: Logger | null
  readonly reporter: UpstreamReporter
  readonly metrics: ProxyMetrics
  readonly pathOptions: PathOptions
  readonly #trust: readonly Cidr[]
  readonly #trustCache = new Map<string, boolean>()
  readonly #hostCache = new Map<string, string | null>()
  readonly #idPrefix = randomBytes(10).toString('hex')
  #idCounter = 0
  /** Requests being forwarded (drain waits for 0). */
  inflight = 0
  readonly tunnels = new Set<Socket>()
  /** Reused by `prepare` (the hot path is synchronous until the exchange copies it). */
  readonly #target: Target = { authority: null, path: '/', query: '' }
  readonly p: Prepared = {
    route: null as unknown as Route,
    headers: [],
    requestId: '',
    host: '',
    hostHeader: '',
    path: '/',
    query: '',
    cookie: undefined,
    contentLength: null,
    chunked: false,
    tlsVhost: false,
    expect: null,
  }

  constructor(o: ForwarderOptions) {
    this.log = o.log
    this.access = o.accessLog ? o.log.child({ sub: 'access' }) : null
    this.reporter = o.reporter
    this.metrics = o.metrics
    this.pathOptions = o.pathOptions
    this.#trust = o.trustForwardedFrom
  }

  newRequestId(): string {
    const n = ++this.#idCounter
    return this.#idPrefix + n.toString(16).padStart(12, '0')
  }

  trusted(ip: string): boolean {
    if (this.#trust.length === 0) return false
    let t = this.#trustCache.get(ip)
    if (t === undefined) {
      const plain = ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip
      t = this.#trust.some((c) => cidrContains(c, plain))
      if (this.#trustCache.size > 4096) this.#trustCache.clear()
      this.#trustCache.set(ip, t)
    }
    return t
  }

  normalizeHost(raw: string): string | null {
    let h = this.#hostCache.get(raw)
    if (h === undefined) {
      h = normalizeHost(raw)
      if (this.#hostCache.size > 4096) this.#hostCache.clear()
      this.#hostCache.set(raw, h)
    }
    return h
  }

  /**
   * Everything before choosing an endpoint, on any engine's request head. Returns 0 and fills `this.p`, or the
   * status to answer (400/404/405) when the request ends here. `upgrade`: the WebSocket path (Upgrade/Connection
   * are then forwarded).
   */
  prepare(req: RequestHead, remote: string, li: ListenerInfo, upgrade: boolean): number {
    const method = req.method
    if (method === 'TRACE' || method === 'CONNECT') return 405
    const raw = req.rawHeaders
    const out: string[] = []
    let hostCount = 0
    let hostRaw = ''
    let authority2: string | null = null
    let requestId: string | null = null
    let xff: string | null = null
    let xfProto: string | null = null
    let xfHost: string | null = null
    let xfPort: string | null = null
    let connection: string | null = null
    let contentLength: string | null = null
    let te: string | null = null
    let cookie: string | undefined
    let upgradeValue: string | null = null
    let expect: string | null = null
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!
      const value = raw[i + 1]!
      switch (classify(name)) {
        case H_KEEP:
          out.push(name, value)
          break
        case H_HOST:
          if (hostCount++ === 0) {
            hostRaw = value
            out.push(name, value)
          }
          break
        case H_AUTHORITY:
          authority2 = value
          break
        case H_CONNECTION:
          connection = connection === null ? value : connection + ',' + value
          break
        case H_REQUEST_ID:
          if (requestId === null && value.length > 0 && value.length <= 200) requestId = value
          break
        case H_XFF:
          xff = xff === null ? value : xff + ', ' + value
          break
        case H_XF_PROTO:
          xfProto ??= value
          break
        case H_XF_HOST:
          xfHost ??= value
          break
        case H_XF_PORT:
          xfPort ??= value
          break
        case H_CONTENT_LENGTH:
          contentLength = value
          out.push(name, value)
          break
        case H_TRANSFER_ENCODING:
          te = te === null ? value : te + ',' + value
          break
        case H_UPGRADE:
          upgradeValue = value
          break
        case H_COOKIE:
          // HTTP/2 clients split cookies into several fields; HTTP/1.1 wants one (RFC 9113 §8.2.3).
          cookie = cookie === undefined ? value : cookie + '; ' + value
          break
        case H_EXPECT:
          expect = value.toLowerCase()
          break
        default: // H_DROP
      }
    }
    // RFC 9112 §6.1: Transfer-Encoding on HTTP/1.0 is faulty framing; §3.2: more than one Host line is a 400.
    if (te !== null) {
      if (req.httpVersionMajor === 1 && req.httpVersionMinor === 0) return 400
      // `chunked` is the only coding meshlet frames (and llhttp lets `identity, chunked` through): anything else is
      // a body whose end the proxy and the endpoint could read differently (400, as llhttp answers the others).
      if (!isChunkedOnly(te)) return 400
    }
    if (hostCount > 1) return 400
    if (authority2 !== null) {
      // HTTP/2: :authority is the host (RFC 9113 §8.3.1); the upstream HTTP/1.1 request carries it as Host.
      if (hostCount === 0) out.push('host', authority2)
      else for (let i = 0; i < out.length; i += 2) if (classify(out[i]!) === H_HOST) out[i + 1] = authority2
      hostRaw = authority2
    }
    if (cookie !== undefined) out.push('cookie', cookie)
    const target = this.#target
    if (!parseTarget(req.url, this.pathOptions, target)) return 400
    const authority = target.authority ?? hostRaw
    const host = this.normalizeHost(authority)
    if (host === null) return 400
    if (target.authority !== null && hostCount > 0 && hostRaw !== authority) {
      // RFC 9112 §3.2.2: the authority of an absolute-form target wins over Host. The endpoint (and a redirect) get
      // the host meshlet routed by, never the other one.
      for (let i = 0; i < out.length; i += 2) if (classify(out[i]!) === H_HOST) out[i + 1] = authority
      hostRaw = authority
    }
    // An absolute-form target without a Host line: the upstream request names the same authority.
    if (hostCount === 0 && authority2 === null && authority !== '') out.push('host', authority)
    const path = target.path
    const query = target.query

    const table = this.table
    const vhost = pickVHost(table, host)
    let route = vhost === null ? null : pickRoute(vhost, path)
    if (route === null) route = table.defaultRoute
    if (route === null) return 404

    // Headers named by Connection are hop-by-hop too (rare: only when it lists more than keep-alive/close).
    if (connection !== null && !/^\s*(keep-alive|close|upgrade)\s*$/i.test(connection)) {
      const named = new Set(
        connection
          .toLowerCase()
          .split(',')
          .map((s) => s.trim()),
      )
      for (let i = out.length - 2; i >= 0; i -= 2)
        if (named.has(out[i]!.toLowerCase()) && !eqLower(out[i]!, 'host')) out.splice(i, 2)
    }

    const trusted = this.trusted(remote)
    if (requestId === null) requestId = this.newRequestId()
    let realIp = remote
    let forwardedFor = remote
    if (trusted && xff !== null) {
      forwardedFor = xff + ', ' + remote
      realIp = xff.split(',')[0]!.trim() || remote
    }
    const proto = trusted && xfProto !== null ? xfProto : li.scheme
    out.push(
      'x-request-id',
      requestId,
      'x-real-ip',
      realIp,
      'x-forwarded-for',
      forwardedFor,
      'x-forwarded-host',
      trusted && xfHost !== null ? xfHost : authority,
      'x-forwarded-port',
      trusted && xfPort !== null ? xfPort : li.port,
      'x-forwarded-proto',
      proto,
      'x-forwarded-scheme',
      proto,
      'x-scheme',
      proto,
    )
    if (xff !== null) out.push('x-original-forwarded-for', xff)
    if (upgrade && upgradeValue !== null) out.push('upgrade', upgradeValue, 'connection', 'upgrade')

    // Canary Ingress for the same host and path (ingress-nginx precedence: header, cookie, weight).
    let effective = route
    if (route.canary !== null && useCanary(route.canary.config.canary!, req, cookie)) effective = route.canary

    const p = this.p
    p.route = effective
    p.headers = out
    p.requestId = requestId
    p.host = host
    p.hostHeader = hostRaw === '' ? authority : hostRaw
    p.path = path
    p.query = query
    p.cookie = cookie
    p.contentLength = contentLength
    p.chunked = te !== null
    p.tlsVhost =
      vhost !== null && route.kind !== 'Default' && (vhost.tls || (vhost === table.catchAll && this.#hostHasTls(host)))
    p.expect = expect
    return 0
  }

  #hostHasTls(host: string): boolean {
    const t = this.table
    if (t.tlsHosts.size === 0 && t.tlsWild.size === 0) return false
    if (t.tlsHosts.has(host)) return true
    const dot = host.indexOf('.')
    return dot > 0 && t.tlsWild.has(host.slice(dot + 1))
  }
}
