// The request path shared by both engines: normalise (spec §1.4), match (§1.5–1.6), apply what follows the match
// (§1.8: redirect, body limit, affinity, canary), pick an endpoint, retry, account (metrics, access log, passive
// health). `Forwarder.prepare` does everything up to the route on a plain RequestHead, so it serves node:http,
// node:http2 and the raw HTTP/1.1 engine (h1.ts) alike; `ExchangeBase` holds one request's state for all of them.
//
// This file's engine (`Exchange`) serves the https listener (HTTP/2 by ALPN and HTTP/1.1 through node:http2's
// allowHTTP1) and forwards through the endpoint's undici Pool with undici's low-level `dispatch`: the Exchange is
// the dispatch handler (onConnect/onHeaders/onData/onComplete/onError as methods: no closures per request). Bodies
// stream both ways with backpressure; nothing is buffered whole.

import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2'
import type { Logger } from 'pino'
import { randomBytes } from 'node:crypto'
import type { Socket } from 'node:net'
import type { Cidr } from '../model/ip.ts'
import { cidrContains } from '../model/ip.ts'
import { publishConnectError } from '../model/diagnostics.ts'
import type { UpstreamReporter } from '../model/snapshot.ts'
import type { CanaryConfig } from './annotations.ts'
import { ProxyError, type ProxyErrorCode } from './errors.ts'
import type { ProxyMetrics } from './metrics.ts'
import { hostWithoutPort, normalizeHost, parseTarget, type PathOptions, type Target } from './normalize.ts'
import { matchGroups } from './regex.ts'
import { EMPTY_TABLE, pickRoute, pickVHost, type Route, type RouteTable } from './route-table.ts'
import { UPSTREAM_CONNECTIONS, type Endpoint } from './upstream.ts'

/** What `prepare` reads of a request: an IncomingMessage, an Http2ServerRequest or the raw engine's head. */
export interface RequestHead {
  readonly method: string
  readonly url: string
  readonly rawHeaders: readonly string[]
  readonly httpVersionMajor: number
  readonly httpVersionMinor: number
}

// node:http2's compatibility objects have the same methods as node:http's for everything used here; they are typed
// as the node:http ones inside this file (one shape, one set of call signatures) and told apart by httpVersionMajor.
type DownstreamRequest = IncomingMessage
type DownstreamResponse = ServerResponse

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

const kExchange = Symbol('meshlet.exchange')

// Header classes for one pass over the request's raw headers.
const H_KEEP = 0
const H_DROP = 1
const H_HOST = 2
const H_CONNECTION = 3
const H_REQUEST_ID = 4
const H_XFF = 5
const H_XF_PROTO = 6
const H_XF_HOST = 7
const H_XF_PORT = 8
const H_CONTENT_LENGTH = 9
const H_TRANSFER_ENCODING = 10
const H_UPGRADE = 11
const H_COOKIE = 12
const H_AUTHORITY = 13
const H_EXPECT = 14

/** `name` equals the lowercase ASCII literal `lit`, ignoring case (token characters only; see the why below). */
export function eqLower(name: string, lit: string): boolean {
  // `| 0x20` folds A-Z onto a-z and leaves "-" alone; no other token character folds onto a letter or "-".
  for (let i = 0; i < lit.length; i++) if ((name.charCodeAt(i) | 0x20) !== lit.charCodeAt(i)) return false
  return true
}

function classify(name: string): number {
  // HTTP/2 pseudo-headers: :authority is the host (spec H1); :method, :path, :scheme are already in the head.
  if (name.charCodeAt(0) === 58) return name === ':authority' ? H_AUTHORITY : H_DROP
  switch (name.length) {
    case 2:
      return eqLower(name, 'te') ? H_DROP : H_KEEP
    case 4:
      return eqLower(name, 'host') ? H_HOST : H_KEEP
    case 5:
      return eqLower(name, 'proxy') ? H_DROP : H_KEEP
    case 6:
      if (eqLower(name, 'expect')) return H_EXPECT
      return eqLower(name, 'cookie') ? H_COOKIE : H_KEEP
    case 7:
      return eqLower(name, 'upgrade') ? H_UPGRADE : H_KEEP
    case 8:
      return eqLower(name, 'x-scheme') ? H_DROP : H_KEEP
    case 9:
      return eqLower(name, 'x-real-ip') ? H_DROP : H_KEEP
    case 10:
      if (eqLower(name, 'connection')) return H_CONNECTION
      return eqLower(name, 'keep-alive') ? H_DROP : H_KEEP
    case 12:
      return eqLower(name, 'x-request-id') ? H_REQUEST_ID : H_KEEP
    case 14:
      return eqLower(name, 'content-length') ? H_CONTENT_LENGTH : H_KEEP
    case 15:
      return eqLower(name, 'x-forwarded-for') ? H_XFF : H_KEEP
    case 16:
      if (eqLower(name, 'x-forwarded-host')) return H_XF_HOST
      if (eqLower(name, 'x-forwarded-port')) return H_XF_PORT
      return eqLower(name, 'proxy-connection') ? H_DROP : H_KEEP
    case 17:
      if (eqLower(name, 'x-forwarded-proto')) return H_XF_PROTO
      return eqLower(name, 'transfer-encoding') ? H_TRANSFER_ENCODING : H_KEEP
    case 18:
      return eqLower(name, 'x-forwarded-scheme') ? H_DROP : H_KEEP
    case 24:
      return eqLower(name, 'x-original-forwarded-for') ? H_DROP : H_KEEP
    default:
      return H_KEEP
  }
}

/** Hop-by-hop response headers (spec §1.8.4), on undici's raw Buffer names: the length test spares the string. */
export function dropResponseHeader(b: Buffer): boolean {
  const n = b.length
  if (n !== 10 && n !== 17 && n !== 16 && n !== 7 && n !== 2) return false
  return dropResponseHeaderName(b.toString('latin1'))
}

/** Hop-by-hop response headers (spec §1.8.4), on string names (the raw engine's parser gives strings). */
export function dropResponseHeaderName(s: string): boolean {
  switch (s.length) {
    case 10:
      return eqLower(s, 'connection') || eqLower(s, 'keep-alive')
    case 17:
      return eqLower(s, 'transfer-encoding')
    case 16:
      return eqLower(s, 'proxy-connection')
    case 7:
      return eqLower(s, 'upgrade') || eqLower(s, 'trailer')
    case 2:
      return eqLower(s, 'te')
    default:
      return false
  }
}

/** A Transfer-Encoding value (all its lines joined) that is exactly `chunked`, any case, optional spaces. */
function isChunkedOnly(te: string): boolean {
  return te.length === 7 ? eqLower(te, 'chunked') : /^[ \t]*chunked[ \t]*$/i.test(te)
}

export const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE'])

export function isConnectFailure(code: string | undefined): boolean {
  return (
    code === 'ECONNREFUSED' ||
    code === 'UND_ERR_CONNECT_TIMEOUT' ||
    code === 'EHOSTUNREACH' ||
    code === 'ENETUNREACH' ||
    code === 'EADDRNOTAVAIL' ||
    code === 'ENOTFOUND' ||
    code === 'EAI_AGAIN' ||
    // the endpoint's pool was retired between the pick and the dispatch: nothing was sent
    code === 'UND_ERR_CLOSED' ||
    code === 'UND_ERR_DESTROYED'
  )
}

/**
 * Streams a chunked request body, failing once it exceeds `limit` bytes (proxy-body-size → 413). undici pulls the
 * next chunk only after the previous one was written out, so a chunk handed over and not taken back within
 * proxy-send-timeout means the endpoint stopped reading (→ 504).
 */
async function* limitBody(ex: Exchange, req: DownstreamRequest, limit: number): AsyncGenerator<Buffer> {
  let total = 0
  for await (const chunk of req as AsyncIterable<Buffer>) {
    total += chunk.length
    if (limit > 0 && total > limit) throw new ProxyError('MLT_PROXY_BODY_TOO_LARGE')
    ex.armSendTimer()
    yield chunk
    ex.clearSendTimer()
  }
}

export const STATUS_TEXT = {
  400: 'Bad Request',
  404: 'Not Found',
  405: 'Method Not Allowed',
  408: 'Request Timeout',
  413: 'Payload Too Large',
  417: 'Expectation Failed',
  426: 'Upgrade Required',
  431: 'Request Header Fields Too Large',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  501: 'Not Implemented',
  504: 'Gateway Timeout',
  505: 'HTTP Version Not Supported',
} as Record<number, string>

/**
 * The catalogue code of a built-in answer given before a route is chosen (access log, /status `unrouted`): what the
 * 400/404/405 of prepare() and the engines' own 400/431/505 mean.
 */
export function unroutedCode(status: number): ProxyErrorCode {
  switch (status) {
    case 404:
      return 'MLT_PROXY_NO_ROUTE'
    case 405:
      return 'MLT_PROXY_METHOD_NOT_ALLOWED'
    case 413:
      return 'MLT_PROXY_BODY_TOO_LARGE'
    default:
      // 400, 431, 501, 505: the request itself cannot be read or framed.
      return 'MLT_PROXY_BAD_REQUEST'
  }
}

/** Built-in answers after which the connection cannot be trusted to be in step (framing or version refused). */
export function closesConnection(status: number): boolean {
  return status === 400 || status === 501 || status === 505
}

/** The body of a built-in answer (plain text). */
export function replyBody(status: number): string {
  return `${status} ${STATUS_TEXT[status] ?? ''}\n`
}

/** The first value of header `lower` (a lowercase name) in a flat raw header list. */
export function headerValue(raw: readonly string[], lower: string): string | undefined {
  for (let i = 0; i < raw.length; i += 2) {
    const n = raw[i]!
    if (n.length === lower.length && eqLower(n, lower)) return raw[i + 1]
  }
  return undefined
}

/** Parses one cookie's value out of a Cookie header; null when absent. */
export function cookieValue(header: string | undefined, name: string): string | null {
  if (header === undefined) return null
  let i = 0
  while (i < header.length) {
    while (header.charCodeAt(i) === 32) i++
    const eq = header.indexOf('=', i)
    if (eq < 0) return null
    let end = header.indexOf(';', eq)
    if (end < 0) end = header.length
    if (eq - i === name.length && header.startsWith(name, i)) return header.slice(eq + 1, end).trim()
    i = end + 1
  }
  return null
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

  /** A built-in answer (no upstream) on a node:http or node:http2 response: plain text, X-Request-ID, counted. */
  reply(res: DownstreamResponse, status: number, requestId: string | null, route: Route | null, close: boolean): void {
    const body = replyBody(status)
    const headers: string[] = ['content-type', 'text/plain; charset=utf-8', 'content-length', String(body.length)]
    if (requestId !== null) headers.push('x-request-id', requestId)
    // HTTP/2 has no Connection header (RFC 9113 §8.2.2); node:http2 refuses it.
    if (close && (res as ServerResponse).req?.httpVersionMajor === 1) headers.push('connection', 'close')
    if (!res.headersSent) res.writeHead(status, headers)
    res.end(body)
    if (route === null) this.metrics.countUnrouted(status)
  }

  /** Request entry point of the node:http / node:http2 listener (bound once per listener). */
  handle(
    req: DownstreamRequest | Http2ServerRequest,
    res: DownstreamResponse | Http2ServerResponse,
    li: ListenerInfo,
  ): void {
    // node:http takes an `HTTP/2.0` request line as HTTP/1 with major 2; real HTTP/2 requests carry their stream.
    const h1VersionBad = req.httpVersionMajor !== 1 && (req as Partial<Http2ServerRequest>).stream === undefined
    const st = h1VersionBad ? 505 : this.prepare(req as RequestHead, req.socket?.remoteAddress ?? '', li, false)
    if (st !== 0) {
      const id = st === 400 ? null : this.newRequestId()
      this.reply(res as DownstreamResponse, st, id, null, closesConnection(st))
      if (this.access !== null)
        this.access.info(
          { method: req.method, url: req.url, status: st, code: unroutedCode(st), requestId: id },
          'request',
        )
      return
    }
    const ex = new Exchange(this, li, req as DownstreamRequest, res as DownstreamResponse, this.p)
    ex.begin()
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

function onResClose(this: DownstreamResponse): void {
  const ex = (this as unknown as Record<symbol, Exchange | undefined>)[kExchange]
  if (ex !== undefined && !ex.done) ex.clientGone()
}

function onResDrain(this: DownstreamResponse): void {
  const ex = (this as unknown as Record<symbol, Exchange | undefined>)[kExchange]
  if (ex !== undefined && ex.resume !== null) ex.resume()
}

function onReqPause(this: DownstreamRequest): void {
  const ex = (this as unknown as Record<symbol, Exchange | undefined>)[kExchange]
  if (ex !== undefined) ex.armSendTimer()
}

function onReqResume(this: DownstreamRequest): void {
  const ex = (this as unknown as Record<symbol, Exchange | undefined>)[kExchange]
  if (ex !== undefined) ex.clearSendTimer()
}

function onSendTimeout(ex: Exchange): void {
  ex.sendTimer = null
  if (ex.done) return
  const err = new ProxyError(
    'MLT_PROXY_UPSTREAM_TIMEOUT',
    'proxy-send-timeout: the endpoint stopped reading the request',
  )
  ex.abortUpstream?.(err)
}

/** Bytes read so far on the connection a request arrived on (HTTP/2: the session's, shared by its streams). */
function connectionBytesRead(req: DownstreamRequest): number {
  if (req.httpVersionMajor === 2) return (req as unknown as Http2ServerRequest).stream.session?.socket?.bytesRead ?? 0
  return req.socket?.bytesRead ?? 0
}

/**
 * client-body-timeout on the node:http / node:http2 engine: checked once per period rather than per body chunk (the
 * body is read by undici, not here). Progress is the connection's byte count; a body held back by the endpoint (the
 * send timer runs) is not the client's fault.
 */
function onBodyTimeout(ex: Exchange): void {
  ex.bodyTimer = null
  const req = ex.req
  if (ex.done || req.complete) return
  const read = connectionBytesRead(req)
  if (read !== ex.bodyRead || ex.sendTimer !== null) {
    ex.bodyRead = read
    ex.bodyTimer = setTimeout(onBodyTimeout, ex.route.config.clientBodyTimeoutMs, ex)
    return
  }
  // Answer first: aborting the upstream request reports an error back (onError), which then finds the exchange done.
  ex.status = 408
  ex.fwd.reply(ex.res, 408, ex.requestId, ex.route, true)
  ex.finish(408)
  ex.abortUpstream?.(new ProxyError('MLT_PROXY_UPSTREAM_ERROR', 'client-body-timeout: the client stopped sending'))
}

/** Still waiting for a pool connection after proxy-connect-timeout: 503, as the raw engine answers (h1.ts sweep). */
function onQueueTimeout(ex: Exchange): void {
  ex.queueTimer = null
  if (ex.done || ex.abortUpstream !== null) return
  ex.status = 503
  ex.fwd.reply(ex.res, 503, ex.requestId, ex.route, ex.opts.body !== null)
  ex.finish(503)
}

/** The node:http / node:http2 engine's exchange: the undici dispatch handler. */
export class Exchange extends ExchangeBase {
  readonly req: DownstreamRequest
  readonly res: DownstreamResponse
  responseStarted = false
  opts: {
    path: string
    method: string
    headers: string[]
    body: DownstreamRequest | AsyncGenerator<Buffer> | null
    headersTimeout: number
    bodyTimeout: number
  }
  abortUpstream: ((err?: Error) => void) | null = null
  resume: (() => void) | null = null
  sendTimer: NodeJS.Timeout | null = null
  /** client-body-timeout while the request body is incomplete (see onBodyTimeout); bytes read at its last look. */
  bodyTimer: NodeJS.Timeout | null = null
  bodyRead = -1
  /** Set while the request may be queued for one of the endpoint's pool connections (see send). */
  queueTimer: NodeJS.Timeout | null = null

  constructor(fwd: Forwarder, li: ListenerInfo, req: DownstreamRequest, res: DownstreamResponse, p: Prepared) {
    super(fwd, li, req.method!, p)
    this.req = req
    this.res = res
    this.opts = {
      path: '',
      method: req.method!,
      headers: this.headers,
      body: null,
      headersTimeout: this.route.config.readTimeoutMs,
      bodyTimeout: this.route.config.readTimeoutMs,
    }
  }

  /** Redirect, body limit, affinity, endpoint choice, then the first attempt. */
  begin(): void {
    const res = this.res
    const route = this.route
    const cfg = route.config
    const fwd = this.fwd
    const location = this.redirectLocation(this.req.url!)
    if (location !== null) {
      res.writeHead(308, ['location', location, 'content-length', '0', 'x-request-id', this.requestId])
      res.end()
      this.finish(308)
      return
    }
    if (this.declaredTooLarge()) {
      this.status = 413
      fwd.reply(res, 413, this.requestId, route, true)
      this.finish(413)
      return
    }
    const ep = this.firstEndpoint()
    if (ep === null) {
      fwd.reply(res, 503, this.requestId, route, false)
      this.finish(503)
      return
    }
    const req = this.req
    ;(res as unknown as Record<symbol, Exchange>)[kExchange] = this
    if (this.contentLength !== null && this.contentLength !== '0') this.opts.body = req
    else if (
      this.chunked ||
      (req.httpVersionMajor === 2 && !(req as unknown as Http2ServerRequest).stream.endAfterHeaders)
    ) {
      this.opts.body = limitBody(this, req, cfg.bodySizeLimit)
    }
    if (this.opts.body === req) {
      ;(req as unknown as Record<symbol, Exchange>)[kExchange] = this
      req.on('pause', onReqPause)
      req.on('resume', onReqResume)
    }
    if (this.opts.body !== null && !req.complete) {
      this.bodyRead = connectionBytesRead(req)
      this.bodyTimer = setTimeout(onBodyTimeout, cfg.clientBodyTimeoutMs, this)
    }
    this.opts.path = this.upstreamPath()
    res.on('close', onResClose)
    fwd.inflight++
    this.counted = true
    this.send(ep)
  }

  send(ep: Endpoint): void {
    this.attempt(ep)
    this.abortUpstream = null
    // More requests in flight to the endpoint than its pool has connections: this one may queue in undici, which has
    // no deadline for that; bound the wait like a connect (onQueueTimeout). Only then does a request cost a timer.
    if (ep.inflight > UPSTREAM_CONNECTIONS && this.queueTimer === null)
      this.queueTimer = setTimeout(onQueueTimeout, this.route.config.connectTimeoutMs, this)
    ep.pool.dispatch(this.opts as never, this as never)
  }

  armSendTimer(): void {
    if (this.sendTimer === null && !this.done)
      this.sendTimer = setTimeout(onSendTimeout, this.route.config.sendTimeoutMs, this)
  }

  clearSendTimer(): void {
    if (this.sendTimer !== null) {
      clearTimeout(this.sendTimer)
      this.sendTimer = null
    }
  }

  // ---- undici DispatchHandler (legacy method names: undici calls them without wrapping)

  onConnect(abort: (err?: Error) => void): void {
    this.abortUpstream = abort
    if (this.queueTimer !== null) {
      clearTimeout(this.queueTimer)
      this.queueTimer = null
    }
    if (this.done) abort() // answered meanwhile (queue wait, client-body-timeout, client gone): never sent
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void, _statusText: string): boolean {
    if (statusCode < 200) return true
    const res = this.res
    this.upstreamHeaders = performance.now()
    this.status = statusCode
    this.resume = resume
    const ep = this.endpoint!
    this.fwd.reporter.report(this.route.backend.service, ep.host, ep.port, statusCode < 500)
    const out: string[] = []
    for (let i = 0; i < rawHeaders.length; i += 2) {
      const name = rawHeaders[i]!
      if (dropResponseHeader(name)) continue
      out.push(name.toString('latin1'), rawHeaders[i + 1]!.toString('latin1'))
    }
    out.push('x-request-id', this.requestId)
    if (this.setCookie !== null) out.push('set-cookie', this.setCookie)
    try {
      res.writeHead(statusCode, out)
    } catch (err) {
      // An upstream header Node refuses to send (invalid characters): the response cannot be relayed.
      this.status = 502
      this.fwd.log.debug({ err, upstream: ep.key }, 'invalid upstream response header')
      this.abortUpstream?.(err as Error)
      return false
    }
    this.responseStarted = true
    return true
  }

  onData(chunk: Buffer): boolean {
    this.bytes += chunk.length
    const ok = this.res.write(chunk)
    if (!ok) this.res.once('drain', onResDrain)
    return ok
  }

  onComplete(_trailers: Buffer[] | null): void {
    this.res.end()
    this.finish(this.status)
  }

  onError(err: Error & { code?: string }): void {
    const ep = this.upstream!
    this.release()
    this.clearSendTimer()
    if (this.done) return
    const res = this.res
    const code = err.code
    if (code === 'MLT_PROXY_BODY_TOO_LARGE') {
      this.#fail(413)
      return
    }
    const connectFail = isConnectFailure(code)
    if (connectFail) {
      this.route.stats.connectErrors++
      publishConnectError('proxy', this.route.backend.service, ep.host, ep.port, err)
    }
    this.fwd.reporter.report(this.route.backend.service, ep.host, ep.port, false)
    if (this.responseStarted) {
      // Mid-response: nothing sensible can be sent; cut the downstream connection so the client sees it.
      this.logUpstreamError(err)
      res.destroy()
      this.finish(this.status)
      return
    }
    if (this.status === 502) {
      this.#fail(502) // an upstream response head Node refused to relay
      return
    }
    const body = this.opts.body
    const bodyUntouched = body === null || (body === this.req && !this.req.readableDidRead)
    const retry =
      this.tries < this.route.config.tries &&
      (connectFail
        ? bodyUntouched
        : (code === 'UND_ERR_SOCKET' || code === 'ECONNRESET' || code === 'EPIPE') &&
          body === null &&
          IDEMPOTENT.has(this.method))
    if (retry) {
      const next = this.nextEndpoint(ep)
      if (next !== null) {
        this.send(next)
        return
      }
    }
    this.logUpstreamError(err)
    const timeout =
      code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'MLT_PROXY_UPSTREAM_TIMEOUT'
    this.#fail(timeout ? 504 : 502)
  }

  #fail(status: number): void {
    this.status = status
    this.fwd.reply(this.res, status, this.requestId, this.route, status === 413)
    this.finish(status)
  }

  /** The downstream connection closed before the response ended: stop the upstream request. */
  clientGone(): void {
    if (this.done) return
    this.abortUpstream?.(new ProxyError('MLT_PROXY_UPSTREAM_ERROR', 'client closed the connection'))
    this.finish(this.status === 0 ? 499 : this.status)
  }

  override finish(status: number): void {
    this.clearSendTimer()
    if (this.bodyTimer !== null) {
      clearTimeout(this.bodyTimer)
      this.bodyTimer = null
    }
    if (this.queueTimer !== null) {
      clearTimeout(this.queueTimer)
      this.queueTimer = null
    }
    super.finish(status)
  }
}
