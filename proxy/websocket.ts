// Upgraded connections (WebSocket, spec §1.8.4): the request is routed like any other, then meshlet opens a TCP
// connection to the chosen endpoint and writes the request head itself (with Upgrade/Connection kept and the usual
// X-Forwarded-* headers). The sockets are spliced only once the endpoint answers `101 Switching Protocols` to
// websocket: until then not one client byte reaches the endpoint, so a pipelined request behind an Upgrade can never
// bypass routing. Any other answer is relayed as an ordinary response (framed by its Content-Length or chunking) with
// `connection: close`, and both connections close after it. An endpoint that resets before its answer gets the
// client a 502 (nginx does the same). Only `websocket` is tunnelled; other Upgrade tokens (h2c, …) are plain HTTP to
// meshlet and never reach this file (`isWebSocketUpgrade`).
// Idle limit: proxy-read-timeout when annotated, else one hour, so idle WebSockets are not cut at 60 s.

import { connect, type Socket } from 'node:net'
import { ExchangeBase } from './forward/exchange-base.ts'
import type { Forwarder, ListenerInfo, RequestHead } from './forward/forwarder.ts'
import { dropResponseHeaderName, eqLower } from './http/headers.ts'
import { lingerClose, writeRawStatus } from './http/status.ts'
import type { Endpoint } from './upstream.ts'
import { publishConnectError } from '../model/diagnostics.ts'

/** Whether a request's Upgrade header asks for websocket (the only protocol meshlet tunnels). */
export function isWebSocketUpgrade(raw: readonly string[]): boolean {
  for (let i = 0; i < raw.length; i += 2) {
    const n = raw[i]!
    if (n.length === 7 && eqLower(n, 'upgrade')) return /^\s*websocket\s*$/i.test(raw[i + 1]!)
  }
  return false
}

/** An upgrade request (either engine): route it, then tunnel. `socket` is the downstream, `head` bytes read past the request head. */
export function handleUpgrade(
  fwd: Forwarder,
  req: RequestHead,
  remote: string,
  socket: Socket,
  head: Buffer,
  li: ListenerInfo,
): void {
  socket.on('error', () => socket.destroy())
  if (!isWebSocketUpgrade(req.rawHeaders)) {
    // The engines hand only websocket upgrades here; anything else is not a protocol meshlet switches to.
    fwd.metrics.countUnrouted(400)
    writeRawStatus(socket, 400)
    return
  }
  const st = fwd.prepare(req, remote, li, true)
  if (st !== 0) {
    fwd.metrics.countUnrouted(st)
    writeRawStatus(socket, st)
    return
  }
  const ex = new ExchangeBase(fwd, li, req.method, fwd.p)
  const location = ex.redirectLocation(req.url)
  if (location !== null) {
    writeRawStatus(socket, 308, `location: ${location}\r\n`)
    ex.finish(308)
    return
  }
  if (ex.contentLength !== null || ex.chunked) {
    // A WebSocket handshake has no body (RFC 6455 §4.1); one would be sent to the endpoint unframed.
    writeRawStatus(socket, 400)
    ex.finish(400)
    return
  }
  // The affinity cookie is honoured but not set on a 101 (the tunnel's response head is the endpoint's, untouched).
  const ep = ex.firstEndpoint()
  if (ep === null) {
    writeRawStatus(socket, 503)
    ex.finish(503)
    return
  }
  new Tunnel(fwd, ex, socket, head).connect(ep)
}

/** Longest response head accepted from an endpoint before its 101 (node:http's header limit). */
const MAX_RESPONSE_HEAD = 16384
const CRLFCRLF = Buffer.from('\r\n\r\n')

// Tunnel phases.
const T_CONNECTING = 0
/** Request head written; reading the endpoint's answer. Client bytes are held back. */
const T_HEAD = 1
/** The endpoint did not switch: relaying its response, then closing. */
const T_RELAY = 2
/** 101 seen: bytes flow both ways. */
const T_OPEN = 3
const T_DONE = 4

class Tunnel {
  readonly fwd: Forwarder
  readonly ex: ExchangeBase
  readonly client: Socket
  /** Client bytes received past the request head: written to the endpoint only after its 101. */
  held: Buffer
  upstream: Socket | null = null
  phase = T_CONNECTING
  /** Response bytes gathered until the end of the endpoint's head. */
  buf: Buffer = Buffer.alloc(0)
  /** Frames the relayed (non-101) response body, to know where it ends. */
  framer: BodyFramer | null = null

  constructor(fwd: Forwarder, ex: ExchangeBase, client: Socket, head: Buffer) {
    this.fwd = fwd
    this.ex = ex
    this.client = client
    // A copy: the engine's read buffer may be reused before the endpoint's 101 arrives.
    this.held = head.length === 0 ? head : Buffer.from(head)
  }

  connect(ep: Endpoint): void {
    const ex = this.ex
    ex.tries++
    ex.upstream = ep
    const up = connect({ host: ep.host, port: ep.port, noDelay: true, timeout: ex.route.config.connectTimeoutMs })
    this.upstream = up
    this.phase = T_CONNECTING
    up.once('timeout', () => {
      if (this.phase === T_CONNECTING)
        up.destroy(Object.assign(new Error('connect timeout'), { code: 'UND_ERR_CONNECT_TIMEOUT' }))
    })
    up.once('connect', () => {
      this.fwd.reporter.report(ex.route.backend.service, ep.host, ep.port, true)
      this.#writeHead(up)
    })
    up.on('error', (err: Error & { code?: string }) => this.#upstreamError(ep, up, err))
    up.on('close', () => this.#upstreamClosed(up))
  }

  #upstreamError(ep: Endpoint, up: Socket, err: Error & { code?: string }): void {
    if (this.upstream !== up) return
    if (this.phase !== T_CONNECTING) return // 'close' follows and decides
    const ex = this.ex
    this.fwd.reporter.report(ex.route.backend.service, ep.host, ep.port, false)
    ex.route.stats.connectErrors++
    publishConnectError('proxy', ex.route.backend.service, ep.host, ep.port, err)
    this.phase = T_DONE
    if (ex.tries < ex.route.config.tries && !this.client.destroyed) {
      const next = ex.nextEndpoint(ep)
      if (next !== null) {
        this.connect(next)
        return
      }
    }
    this.#fail(err.code === 'UND_ERR_CONNECT_TIMEOUT' ? 504 : 502)
  }

  /** The endpoint closed (or reset): before its answer → 502; while relaying → the relay ends; open → both close. */
  #upstreamClosed(up: Socket): void {
    if (this.upstream !== up) return
    const phase = this.phase
    if (phase === T_HEAD) {
      const ex = this.ex
      this.fwd.reporter.report(ex.route.backend.service, ex.upstream!.host, ex.upstream!.port, false)
      this.#fail(502)
    } else if (phase === T_RELAY) this.#finishRelay()
  }

  /** A built-in answer to the client and the end of the exchange (nothing was relayed yet). */
  #fail(status: number): void {
    this.phase = T_DONE
    this.upstream?.destroy()
    writeRawStatus(this.client, status)
    this.ex.finish(status)
  }

  #writeHead(up: Socket): void {
    const ex = this.ex
    const client = this.client
    if (client.destroyed) {
      this.phase = T_DONE
      up.destroy()
      ex.finish(499)
      return
    }
    const h = ex.headers
    let head = `${ex.method} ${ex.upstreamPath()} HTTP/1.1\r\n`
    for (let i = 0; i < h.length; i += 2) head += `${h[i]}: ${h[i + 1]}\r\n`
    up.write(head + '\r\n')
    this.phase = T_HEAD
    // Nothing the client sends goes to the endpoint before its 101: hold it (paused, so it stays bounded).
    client.pause()
    client.on('data', (d: Buffer) => this.#clientData(d))
    client.once('close', () => this.#clientClosed())
    up.setTimeout(ex.route.config.readTimeoutMs)
    up.on('timeout', () => {
      if (this.phase === T_HEAD) this.#fail(504)
      else if (this.phase === T_RELAY) this.#finishRelay()
    })
    up.on('data', (d: Buffer) => this.#upstreamData(d))
  }

  #clientData(d: Buffer): void {
    if (this.phase === T_OPEN) return // piped
    // Before the 101 (the socket is paused, so only what was already read): held; after a refusal: dropped.
    if (this.phase <= T_HEAD) this.held = this.held.length === 0 ? d : Buffer.concat([this.held, d])
  }

  #clientClosed(): void {
    if (this.phase === T_OPEN || this.phase === T_DONE) return
    this.phase = T_DONE
    this.upstream?.destroy()
    this.ex.finish(this.ex.status === 0 ? 499 : this.ex.status)
  }

  #upstreamData(d: Buffer): void {
    if (this.phase === T_RELAY) {
      this.#relay(d)
      return
    }
    if (this.phase !== T_HEAD) return
    this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d])
    for (;;) {
      const end = this.buf.indexOf(CRLFCRLF)
      if (end < 0) {
        if (this.buf.length > MAX_RESPONSE_HEAD) this.#fail(502)
        return
      }
      const headText = this.buf.toString('latin1', 0, end)
      const rest = this.buf.subarray(end + 4)
      const status = statusOf(headText)
      if (status === 0) {
        this.#fail(502)
        return
      }
      if (status === 101) {
        if (!switchesToWebSocket(headText)) {
          this.#fail(502) // switched to something the client did not ask for
          return
        }
        this.#open(this.buf.subarray(0, end + 4), rest)
        return
      }
      if (status < 200) {
        this.buf = rest // an interim answer (100, 103): not relayed; the final one follows
        continue
      }
      this.#startRelay(status, headText, rest)
      return
    }
  }

  /** 101: the endpoint's head goes to the client untouched, then bytes flow both ways. */
  #open(head: Buffer, rest: Buffer): void {
    const ex = this.ex
    const client = this.client
    const up = this.upstream!
    this.phase = T_OPEN
    this.buf = Buffer.alloc(0)
    up.removeAllListeners('data')
    up.removeAllListeners('timeout')
    client.removeAllListeners('data')
    ex.upstreamHeaders = performance.now()
    client.write(head)
    if (rest.length > 0) client.write(rest)
    if (this.held.length > 0) up.write(this.held)
    this.held = Buffer.alloc(0)
    const idle = ex.route.config.tunnelIdleMs
    up.setTimeout(idle)
    client.setTimeout(idle)
    const fwd = this.fwd
    fwd.tunnels.add(client)
    ex.status = 101
    const end = () => {
      this.phase = T_DONE
      if (!fwd.tunnels.delete(client)) return
      up.destroy()
      client.destroy()
      ex.finish(101)
    }
    // Idle only when neither direction moved for `idle` ms: each socket's timer is reset by its own traffic, so a
    // timeout on one side checks whether the other side was active meanwhile.
    let lastActivity = Date.now()
    up.on('data', () => (lastActivity = Date.now()))
    client.on('data', () => (lastActivity = Date.now()))
    const onTimeout = () => {
      if (Date.now() - lastActivity >= idle - 5) end()
    }
    up.on('timeout', onTimeout)
    client.on('timeout', onTimeout)
    up.on('close', end)
    client.on('close', end)
    up.on('error', end)
    client.on('error', end)
    up.pipe(client)
    client.pipe(up)
    client.resume()
  }

  /** Not switched: relay the answer as an ordinary response that closes the connection. */
  #startRelay(status: number, headText: string, rest: Buffer): void {
    const ex = this.ex
    this.phase = T_RELAY
    this.buf = Buffer.alloc(0)
    this.held = Buffer.alloc(0)
    ex.status = status
    ex.upstreamHeaders = performance.now()
    const ep = ex.upstream!
    this.fwd.reporter.report(ex.route.backend.service, ep.host, ep.port, status < 500)
    const lines = headText.split('\r\n')
    let out = `HTTP/1.1 ${lines[0]!.slice(9)}\r\n`
    let length: number | null = null
    let chunked = false
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i]!
      const colon = line.indexOf(':')
      if (colon <= 0) continue
      const name = line.slice(0, colon).trim().toLowerCase()
      const value = line.slice(colon + 1).trim()
      // Hop-by-hop headers go as on every response, but the body is relayed in its own framing: its Transfer-Encoding stays.
      if (dropResponseHeaderName(name) && name !== 'transfer-encoding') continue
      if (name === 'content-length') length = /^\d{1,15}$/.test(value) ? Number(value) : null
      if (name === 'transfer-encoding') chunked = /(^|,)\s*chunked\s*$/i.test(value)
      out += line + '\r\n'
    }
    out += `x-request-id: ${ex.requestId}\r\nconnection: close\r\n\r\n`
    const noBody = ex.method === 'HEAD' || status === 204 || status === 304
    this.framer = noBody
      ? new BodyFramer(0, false)
      : chunked
        ? new BodyFramer(-1, true)
        : new BodyFramer(length ?? -1, false)
    this.client.write(out, 'latin1')
    this.client.resume() // what the client sends now is dropped (#clientData); its FIN is seen
    this.#relay(rest)
  }

  #relay(d: Buffer): void {
    const f = this.framer!
    const used = f.feed(d)
    this.ex.bytes += used < 0 ? d.length : used
    if (d.length > 0) {
      const part = used < 0 ? d : d.subarray(0, used)
      if (part.length > 0 && !this.client.write(part)) {
        const up = this.upstream!
        up.pause()
        this.client.once('drain', () => up.resume())
      }
    }
    if (used >= 0) this.#finishRelay()
  }

  #finishRelay(): void {
    if (this.phase !== T_RELAY) return
    this.phase = T_DONE
    this.upstream?.destroy()
    lingerClose(this.client)
    this.ex.finish(this.ex.status)
  }
}

/** The status of an HTTP/1.x response head, 0 when the status line does not parse. */
function statusOf(head: string): number {
  const m = /^HTTP\/1\.[01] ([1-5]\d\d)(?: |\r|$)/.exec(head)
  return m === null ? 0 : Number(m[1])
}

/** A 101 head whose Upgrade names websocket (the protocol the client asked for). */
function switchesToWebSocket(head: string): boolean {
  return /\r\nupgrade:[ \t]*websocket[ \t]*(\r|$)/i.test(head)
}

/**
 * Finds where a relayed response body ends: `length` bytes (-1: until the endpoint closes), or chunked framing
 * (RFC 9112 §7.1: size line, data, CRLF, …, last chunk, trailers, empty line). `feed` returns how many bytes of
 * `d` belong to the body once it is complete, -1 while more is expected.
 */
class BodyFramer {
  left: number
  readonly chunked: boolean
  /** Chunked states: 0 size line, 1 data, 2 CRLF after data, 3 trailer lines. */
  state = 0
  size = 0
  /** Characters on the current size or trailer line (an empty trailer line ends the body). */
  lineLen = 0
  done: boolean

  constructor(length: number, chunked: boolean) {
    this.left = length
    this.chunked = chunked
    this.done = !chunked && length === 0
  }

  feed(d: Buffer): number {
    if (this.done) return 0
    if (!this.chunked) {
      if (this.left < 0) return -1
      if (d.length < this.left) {
        this.left -= d.length
        return -1
      }
      const used = this.left
      this.left = 0
      this.done = true
      return used
    }
    for (let i = 0; i < d.length; i++) {
      const c = d[i]!
      switch (this.state) {
        case 0: // size line: hex digits, then anything (extensions) up to LF
          if (c === 10) {
            if (this.size === 0) {
              this.state = 3
              this.lineLen = 0
            } else {
              this.state = 1
              this.left = this.size
            }
          } else if (this.lineLen >= 0) {
            const v = hexDigit(c)
            if (v >= 0 && this.size < 0x10000000) this.size = this.size * 16 + v
            else this.lineLen = -1 // past the digits: extensions or CR
          }
          break
        case 1: {
          const take = Math.min(this.left, d.length - i)
          this.left -= take
          i += take - 1
          if (this.left === 0) this.state = 2
          break
        }
        case 2: // CRLF after the data
          if (c === 10) {
            this.state = 0
            this.size = 0
            this.lineLen = 0
          }
          break
        default: // trailers until an empty line
          if (c === 10) {
            if (this.lineLen === 0) {
              this.done = true
              return i + 1
            }
            this.lineLen = 0
          } else if (c !== 13) this.lineLen++
      }
    }
    return -1
  }
}

function hexDigit(c: number): number {
  if (c >= 48 && c <= 57) return c - 48
  if (c >= 97 && c <= 102) return c - 87
  if (c >= 65 && c <= 70) return c - 55
  return -1
}
