// The node:http / node:http2 engine: serves the https listener (HTTP/2 by ALPN and HTTP/1.1 through node:http2's
// allowHTTP1), and the http listener where the raw engine cannot load or `engine: 'node'` is asked for. It forwards
// through the endpoint's undici Pool with undici's low-level `dispatch`: the Exchange is the dispatch handler
// (onConnect/onHeaders/onData/onComplete/onError as methods: no closures per request). Bodies stream both ways with
// backpressure; nothing is buffered whole.

import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2'
import { publishConnectError } from '../../model/diagnostics.ts'
import { ProxyError } from '../errors.ts'
import { type Route } from '../routes/route-table.ts'
import { UPSTREAM_CONNECTIONS, type Endpoint } from '../upstream.ts'
import type { Forwarder, ListenerInfo, Prepared, RequestHead } from './forwarder.ts'
import { ExchangeBase } from './exchange-base.ts'
import { dropResponseHeader, IDEMPOTENT } from '../http/headers.ts'
import { closesConnection, isConnectFailure, replyBody, unroutedCode } from '../http/status.ts'

// node:http2's compatibility objects have the same methods as node:http's for everything used here; they are typed
// as the node:http ones inside this file (one shape, one set of call signatures) and told apart by httpVersionMajor.
type DownstreamRequest = IncomingMessage
type DownstreamResponse = ServerResponse

/** The Exchange of a request and its response, for their event handlers (shared functions, no closures). */
const kExchange: unique symbol = Symbol('meshlet.exchange')

declare module 'node:http' {
  interface IncomingMessage {
    [kExchange]?: Exchange
  }
  interface ServerResponse {
    [kExchange]?: Exchange
  }
}

/** A built-in answer (no upstream) on a node:http or node:http2 response: plain text, X-Request-ID, counted. */
export function reply(
  fwd: Forwarder,
  res: DownstreamResponse,
  status: number,
  requestId: string | null,
  route: Route | null,
  close: boolean,
): void {
  const body = replyBody(status)
  const headers: string[] = ['content-type', 'text/plain; charset=utf-8', 'content-length', String(body.length)]
  if (requestId !== null) headers.push('x-request-id', requestId)
  // HTTP/2 has no Connection header (RFC 9113 §8.2.2); node:http2 refuses it.
  if (close && (res as ServerResponse).req?.httpVersionMajor === 1) headers.push('connection', 'close')
  if (!res.headersSent) res.writeHead(status, headers)
  res.end(body)
  if (route === null) fwd.metrics.countUnrouted(status)
}

/** Request entry point of the node:http / node:http2 listener (bound once per listener). */
export function handle(
  fwd: Forwarder,
  req: DownstreamRequest | Http2ServerRequest,
  res: DownstreamResponse | Http2ServerResponse,
  li: ListenerInfo,
): void {
  // node:http takes an `HTTP/2.0` request line as HTTP/1 with major 2; real HTTP/2 requests carry their stream.
  const h1VersionBad = req.httpVersionMajor !== 1 && (req as Partial<Http2ServerRequest>).stream === undefined
  const st = h1VersionBad ? 505 : fwd.prepare(req as RequestHead, req.socket?.remoteAddress ?? '', li, false)
  if (st !== 0) {
    const id = st === 400 ? null : fwd.newRequestId()
    reply(fwd, res as DownstreamResponse, st, id, null, closesConnection(st))
    if (fwd.access !== null)
      fwd.access.info(
        { method: req.method, url: req.url, status: st, code: unroutedCode(st), requestId: id },
        'request',
      )
    return
  }
  const ex = new Exchange(fwd, li, req as DownstreamRequest, res as DownstreamResponse, fwd.p)
  ex.begin()
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

function onResClose(this: DownstreamResponse): void {
  const ex = this[kExchange]
  if (ex !== undefined && !ex.done) ex.clientGone()
}

function onResDrain(this: DownstreamResponse): void {
  const ex = this[kExchange]
  if (ex !== undefined && ex.resume !== null) ex.resume()
}

function onReqPause(this: DownstreamRequest): void {
  const ex = this[kExchange]
  if (ex !== undefined) ex.armSendTimer()
}

function onReqResume(this: DownstreamRequest): void {
  const ex = this[kExchange]
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
  reply(ex.fwd, ex.res, 408, ex.requestId, ex.route, true)
  ex.finish(408)
  ex.abortUpstream?.(new ProxyError('MLT_PROXY_UPSTREAM_ERROR', 'client-body-timeout: the client stopped sending'))
}

/** Still waiting for a pool connection after proxy-connect-timeout: 503, as the raw engine answers (h1/engine.ts sweep). */
function onQueueTimeout(ex: Exchange): void {
  ex.queueTimer = null
  if (ex.done || ex.abortUpstream !== null) return
  ex.status = 503
  reply(ex.fwd, ex.res, 503, ex.requestId, ex.route, ex.opts.body !== null)
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
      reply(fwd, res, 413, this.requestId, route, true)
      this.finish(413)
      return
    }
    const ep = this.firstEndpoint()
    if (ep === null) {
      reply(fwd, res, 503, this.requestId, route, false)
      this.finish(503)
      return
    }
    const req = this.req
    res[kExchange] = this
    if (this.contentLength !== null && this.contentLength !== '0') this.opts.body = req
    else if (
      this.chunked ||
      (req.httpVersionMajor === 2 && !(req as unknown as Http2ServerRequest).stream.endAfterHeaders)
    ) {
      this.opts.body = limitBody(this, req, cfg.bodySizeLimit)
    }
    if (this.opts.body === req) {
      req[kExchange] = this
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
    reply(this.fwd, this.res, status, this.requestId, this.route, status === 413)
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
