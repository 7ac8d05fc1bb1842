// One request on the raw engine (H1Exchange): writes the request to an upstream connection and relays the
// response, gathering small pieces into one write. The client side is seen here only as an `ExchangeClient`
// (h1/downstream.ts implements it), so imports run one way: downstream → exchange → upstream-conn → parser.

import { STATUS_CODES } from 'node:http'
import type { Socket } from 'node:net'
import { publishConnectError } from '../../model/diagnostics.ts'
import { ExchangeBase } from '../forward/exchange-base.ts'
import type { Forwarder, ListenerInfo, RequestHead } from '../forward/forwarder.ts'
import { dropResponseHeaderName, eqLower, IDEMPOTENT } from '../http/headers.ts'
import { isConnectFailure } from '../http/status.ts'
import { UPSTREAM_CONNECTIONS, type Endpoint } from '../upstream.ts'
import { C_BUSY, C_CONNECTING, rawPool, UpstreamConn, type ConnUser } from './upstream-conn.ts'

/** Methods whose empty body is sent as `content-length: 0` (as undici does). */
const PAYLOAD_METHODS = new Set(['POST', 'PUT', 'PATCH'])

export const CRLF_0 = '0\r\n\r\n'
/** Response pieces up to this size are gathered into one write. */
const COALESCE_MAX = 16384
const CONTINUE = 'HTTP/1.1 100 Continue\r\n\r\n'

/** What an exchange needs of the client connection it answers (Downstream). */
export interface ExchangeClient {
  readonly socket: Socket
  /** Close after the current response. */
  closeAfter: boolean
  readonly li: ListenerInfo
  /** The engine's open upstream connections (a new UpstreamConn joins them). */
  readonly upstreams: Set<UpstreamConn>
  /** The listener is draining: responses carry `connection: close`. */
  readonly draining: boolean
  pause(): void
  resume(): void
  writeReply(status: number, requestId: string | null, close: boolean, http10: boolean): void
  exchangeDone(ex: H1Exchange): void
}

/** One request on the raw engine: writes the request to an upstream connection and relays the response. */
export class H1Exchange extends ExchangeBase implements ConnUser {
  readonly down: ExchangeClient
  readonly url: string
  readonly http10: boolean
  readonly headOnly: boolean
  readonly expect: string | null
  conn: UpstreamConn | null = null
  /** Body bytes that arrived before a connection was ready (the downstream is paused meanwhile). */
  buffered: Buffer[] | null = null
  bodyBytes = 0
  bodyComplete = false
  /** Some body bytes were written to an endpoint (a failed attempt can no longer be retried). */
  bodyWritten = false
  /** Whether this request has a body at all (Content-Length > 0 or chunked). */
  readonly hasBody: boolean
  responseStarted = false
  /** The response is chunk-encoded by meshlet (the endpoint sent no Content-Length to an HTTP/1.1 client). */
  chunkOut = false
  /** Date.now() since waiting for a free connection of the endpoint's pool (bounded by proxy-connect-timeout); 0 when not. */
  queuedAt = 0
  /** client-body-timeout bookkeeping, done by the sweep: body bytes seen at its last look, and when they last grew. */
  bodySeen = 0
  bodyProgressAt = 0
  /** Date.now() since the endpoint has not taken a body write (proxy-send-timeout); 0 when it is keeping up. */
  sendBlocked = 0
  waitingDownDrain = false
  pausedDown = false
  /** Response bytes gathered for one write (latin1). */
  out = ''
  begun = false

  constructor(down: ExchangeClient, head: RequestHead, fwd: Forwarder) {
    super(fwd, down.li, head.method, fwd.p)
    this.down = down
    this.url = head.url
    this.http10 = head.httpVersionMinor === 0
    this.headOnly = head.method === 'HEAD'
    this.expect = fwd.p.expect
    this.hasBody = this.chunked || (this.contentLength !== null && this.contentLength !== '0')
  }

  begin(): void {
    this.begun = true
    const down = this.down
    const location = this.redirectLocation(this.url)
    if (location !== null) {
      this.status = 308
      let h = `HTTP/1.1 308 Permanent Redirect\r\nlocation: ${location}\r\ncontent-length: 0\r\nx-request-id: ${this.requestId}\r\n`
      if (down.closeAfter) h += 'connection: close\r\n'
      down.socket.write(h + '\r\n', 'latin1')
      this.end(308)
      return
    }
    if (this.declaredTooLarge()) {
      this.reply(413, true)
      return
    }
    if (this.expect !== null && this.expect !== '100-continue') {
      this.reply(417, true)
      return
    }
    const ep = this.firstEndpoint()
    if (ep === null) {
      this.reply(503, false)
      return
    }
    if (this.expect !== null && this.hasBody && !this.http10 && !this.bodyComplete)
      down.socket.write(CONTINUE, 'latin1')
    this.fwd.inflight++
    this.counted = true
    this.send(ep)
  }

  send(ep: Endpoint): void {
    this.attempt(ep)
    const pool = rawPool(ep)
    const idle = pool.idle.pop()
    if (idle !== undefined) idle.assign(this)
    else if (pool.open < UPSTREAM_CONNECTIONS) this.open(ep)
    else {
      this.queuedAt = Date.now()
      pool.waiting.push(this)
    }
  }

  open(ep: Endpoint): void {
    this.queuedAt = 0
    this.conn = new UpstreamConn(this.down.upstreams, ep, this)
  }

  /** A connection is ready: write the request head and whatever body has arrived. */
  connected(c: UpstreamConn): void {
    this.conn = c
    this.queuedAt = 0
    let h = `${this.method} ${this.upstreamPath()} HTTP/1.1\r\n`
    const hs = this.headers
    for (let i = 0; i < hs.length; i += 2) h += `${hs[i]}: ${hs[i + 1]}\r\n`
    // HTTP/1.0 without Host: HTTP/1.1 requires one; name the endpoint (as undici does).
    if (this.hostHeader === '') h += `host: ${c.ep.host.includes(':') ? `[${c.ep.host}]` : c.ep.host}:${c.ep.port}\r\n`
    if (this.chunked) h += 'transfer-encoding: chunked\r\n'
    else if (this.contentLength === null && PAYLOAD_METHODS.has(this.method)) h += 'content-length: 0\r\n'
    h += '\r\n'
    const s = c.socket
    const buf = this.buffered
    if (buf === null && !(this.chunked && this.bodyComplete)) {
      s.write(h, 'latin1')
      return
    }
    s.cork()
    s.write(h, 'latin1')
    this.buffered = null
    let ok = true
    if (buf !== null) for (const b of buf) ok = this.#writeBody(s, b)
    if (this.chunked && this.bodyComplete) s.write(CRLF_0, 'latin1')
    s.uncork()
    if (this.pausedDown) {
      this.pausedDown = false
      this.down.resume()
    }
    if (!ok) this.#blocked()
  }

  #writeBody(s: Socket, b: Buffer): boolean {
    this.bodyWritten = true
    if (!this.chunked) return s.write(b)
    s.write(`${b.length.toString(16)}\r\n`, 'latin1')
    s.write(b)
    return s.write('\r\n', 'latin1')
  }

  #blocked(): void {
    if (this.sendBlocked === 0) this.sendBlocked = Date.now()
    if (!this.pausedDown) {
      this.pausedDown = true
      this.down.pause()
    }
  }

  /** Request body bytes from the downstream parser. */
  body(chunk: Buffer): void {
    if (this.done) return
    this.bodyBytes += chunk.length
    const limit = this.route.config.bodySizeLimit
    if (limit > 0 && this.bodyBytes > limit) {
      // Chunked body over proxy-body-size (a declared Content-Length was refused up front).
      this.abort(413)
      return
    }
    const c = this.conn
    if (c === null || c.state !== C_BUSY) {
      if (this.buffered === null) this.buffered = []
      this.buffered.push(chunk)
      if (this.begun && !this.pausedDown) {
        this.pausedDown = true
        this.down.pause()
      }
      return
    }
    if (!this.#writeBody(c.socket, chunk)) this.#blocked()
  }

  bodyEnd(): void {
    this.bodyComplete = true
    const c = this.conn
    if (this.done || c === null || c.state !== C_BUSY) return
    c.last = Date.now() // proxy-read-timeout counts from the end of the request
    if (this.chunked && this.buffered === null) c.socket.write(CRLF_0, 'latin1')
  }

  upstreamDrained(): void {
    this.sendBlocked = 0
    if (this.pausedDown) {
      this.pausedDown = false
      this.down.resume()
    }
  }

  responseHead(status: number, headers: string[]): void {
    this.upstreamHeaders = performance.now()
    this.status = status
    const ep = this.endpoint!
    this.fwd.reporter.report(this.route.backend.service, ep.host, ep.port, status < 500)
    const down = this.down
    let h = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}\r\n`
    let length = false
    for (let i = 0; i < headers.length; i += 2) {
      const name = headers[i]!
      if (dropResponseHeaderName(name)) continue
      if (name.length === 14 && eqLower(name, 'content-length')) length = true
      h += `${name}: ${headers[i + 1]}\r\n`
    }
    h += `x-request-id: ${this.requestId}\r\n`
    if (this.setCookie !== null) h += `set-cookie: ${this.setCookie}\r\n`
    const noBody = this.headOnly || status === 204 || status === 304
    if (!noBody && !length) {
      if (this.http10)
        down.closeAfter = true // close-delimited: the only framing an HTTP/1.0 client knows
      else {
        h += 'transfer-encoding: chunked\r\n'
        this.chunkOut = true
      }
    }
    if (down.closeAfter || down.draining) {
      down.closeAfter = true
      h += 'connection: close\r\n'
    } else if (this.http10) h += 'connection: keep-alive\r\n'
    this.responseStarted = true
    this.out = h + '\r\n'
  }

  /**
   * Small pieces of the response (the head, small body chunks, chunk framing) are gathered into one latin1 string
   * and written once per upstream read: one write call instead of a corked writev of three to five buffers.
   */
  responseBody(chunk: Buffer): void {
    this.bytes += chunk.length
    const n = chunk.length
    if (this.out.length + n <= COALESCE_MAX) {
      if (this.chunkOut) this.out += `${n.toString(16)}\r\n${chunk.toString('latin1')}\r\n`
      else this.out += chunk.toString('latin1')
      return
    }
    const s = this.down.socket
    if (this.out !== '') {
      s.write(this.out, 'latin1')
      this.out = ''
    }
    let ok: boolean
    if (this.chunkOut) {
      s.write(`${n.toString(16)}\r\n`, 'latin1')
      s.write(chunk)
      ok = s.write('\r\n', 'latin1')
    } else ok = s.write(chunk)
    if (!ok) this.#downBlocked()
  }

  /** Writes what responseHead/responseBody gathered. */
  flush(): void {
    const ok = this.down.socket.write(this.out, 'latin1')
    this.out = ''
    if (!ok && !this.done) this.#downBlocked()
  }

  #downBlocked(): void {
    if (!this.waitingDownDrain) {
      this.waitingDownDrain = true
      this.conn?.pauseReading()
    }
  }

  downstreamDrained(): void {
    if (this.waitingDownDrain) {
      this.waitingDownDrain = false
      this.conn?.resumeReading()
    }
  }

  responseEnd(c: UpstreamConn): void {
    if (this.chunkOut) this.out += CRLF_0
    if (this.out !== '') this.flush()
    this.conn = null
    if (this.waitingDownDrain) {
      this.waitingDownDrain = false
      c.resumeReading()
    }
    // Reusable only when the endpoint allows it and the whole request was written.
    c.release(c.keepAlive && this.bodyComplete && this.buffered === null)
    this.end(this.status)
  }

  /** The attempt's connection failed or closed before the response ended. */
  upstreamFailed(c: UpstreamConn | null, code: string, err: Error | null): void {
    if (c !== null && this.conn === c) this.conn = null
    if (this.done) return
    const ep = this.endpoint ?? this.upstream!
    this.release()
    this.sendBlocked = 0
    const connectFail = isConnectFailure(code)
    if (connectFail) {
      this.route.stats.connectErrors++
      publishConnectError('proxy', this.route.backend.service, ep.host, ep.port, err ?? code)
    }
    this.fwd.reporter.report(this.route.backend.service, ep.host, ep.port, false)
    if (this.responseStarted) {
      // Mid-response: nothing sensible can be sent; cut the downstream connection so the client sees it.
      if (err !== null) this.logUpstreamError(err)
      this.down.socket.destroy()
      this.end(this.status)
      return
    }
    const retry =
      this.tries < this.route.config.tries &&
      (connectFail
        ? !this.bodyWritten
        : (code === 'UND_ERR_SOCKET' || code === 'ECONNRESET' || code === 'EPIPE') &&
          !this.hasBody &&
          IDEMPOTENT.has(this.method))
    if (retry) {
      const next = this.nextEndpoint(ep)
      if (next !== null) {
        this.send(next)
        return
      }
    }
    if (err !== null) this.logUpstreamError(err)
    const timeout =
      code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'MLT_PROXY_UPSTREAM_TIMEOUT'
    this.reply(timeout ? 504 : 502, false)
  }

  /** Ends the exchange with `status`: a built-in answer if nothing was sent yet, else the downstream is cut. */
  abort(status: number): void {
    if (this.done) return
    const c = this.conn
    this.conn = null
    if (c !== null) c.destroy()
    else this.#unqueue()
    if (this.responseStarted) {
      this.down.socket.destroy()
      this.end(this.status)
      return
    }
    this.reply(status, true)
  }

  #unqueue(): void {
    const ep = this.endpoint
    if (ep === null) return
    const waiting = rawPool(ep).waiting
    const i = waiting.indexOf(this)
    if (i >= 0) waiting.splice(i, 1)
  }

  reply(status: number, close: boolean): void {
    this.status = status
    // A request body not read to its end leaves the connection out of step: close after the answer.
    if (!this.bodyComplete) close = true
    const c = this.conn
    if (c !== null) {
      this.conn = null
      c.destroy()
    }
    if (close) this.down.closeAfter = true
    this.down.writeReply(status, this.requestId, this.down.closeAfter, this.http10)
    this.end(status)
  }

  /** Timeout checks (called by the engine's sweep). */
  sweep(now: number): void {
    if (this.done) return
    const cfg = this.route.config
    if (this.hasBody && !this.bodyComplete) {
      if (this.bodyBytes !== this.bodySeen || this.pausedDown || this.bodyProgressAt === 0) {
        // Progress, or meshlet itself is not reading (backpressure, no connection yet): the client is not idle.
        this.bodySeen = this.bodyBytes
        this.bodyProgressAt = now
      } else if (now - this.bodyProgressAt >= cfg.clientBodyTimeoutMs) {
        this.abort(408)
        return
      }
    }
    const c = this.conn
    if (c === null) {
      // Waiting for a slot of the endpoint's pool: never longer than a connect may take (ingress-nginx answers 503
      // when an upstream queue times out), so a pool full of stuck work cannot hold requests forever.
      if (this.queuedAt > 0 && now - this.queuedAt >= cfg.connectTimeoutMs) {
        this.#unqueue()
        this.queuedAt = 0
        this.reply(503, false)
      }
      return
    }
    if (c.state === C_CONNECTING) {
      if (now - c.last >= cfg.connectTimeoutMs) {
        this.conn = null
        c.gone('UND_ERR_CONNECT_TIMEOUT', null)
        c.destroy()
      }
      return
    }
    if (this.sendBlocked > 0 && now - this.sendBlocked >= cfg.sendTimeoutMs) {
      this.conn = null
      c.gone('MLT_PROXY_UPSTREAM_TIMEOUT', null)
      c.destroy()
      return
    }
    if (this.sendBlocked === 0 && !this.waitingDownDrain && now - c.last >= cfg.readTimeoutMs) {
      this.conn = null
      c.gone(this.responseStarted ? 'UND_ERR_BODY_TIMEOUT' : 'UND_ERR_HEADERS_TIMEOUT', null)
      c.destroy()
    }
  }

  /** The client went away before the response ended. */
  clientGone(): void {
    const c = this.conn
    this.conn = null
    if (c !== null) c.destroy()
    else this.#unqueue()
    this.end(this.status === 0 ? 499 : this.status)
  }

  end(status: number): void {
    if (this.done) return
    this.finish(status)
    if (this.pausedDown) {
      this.pausedDown = false
      this.down.resume()
    }
    this.down.exchangeDone(this)
  }
}
