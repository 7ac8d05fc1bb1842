// The raw engine's upstream side: one UpstreamConn per connection to an endpoint (a net socket read by a RESPONSE
// parser), and the raw engine's keep-alive pool of each endpoint (`RawPool`: idle connections, open count, waiting
// exchanges). The exchange using a connection is seen here only as a `ConnUser` (h1/exchange.ts implements it), so
// this file imports nothing of the exchange or the client side.

import { connect, type Socket } from 'node:net'
import { isConnectFailure } from '../http/status.ts'
import type { Endpoint } from '../upstream.ts'
import {
  giveBackParser,
  PARSER_RESPONSE,
  takeParser,
  type ParseError,
  type Parser,
  type ParserOwner,
  type StreamHandle,
} from './parser.ts'

/** The UpstreamConn of an endpoint socket, for the socket's event handlers (shared functions, no closures). */
const kUp: unique symbol = Symbol('meshlet.upstream')

declare module 'node:net' {
  interface Socket {
    [kUp]?: UpstreamConn
  }
}

/** What a connection needs of the exchange it serves (H1Exchange). */
export interface ConnUser {
  /** A HEAD request: the response has no body whatever its headers say. */
  readonly headOnly: boolean
  /** Response bytes gathered for one write; `flush` writes them. */
  readonly out: string
  flush(): void
  connected(c: UpstreamConn): void
  responseHead(status: number, headers: string[]): void
  responseBody(chunk: Buffer): void
  responseEnd(c: UpstreamConn): void
  upstreamFailed(c: UpstreamConn | null, code: string, err: Error | null): void
  upstreamDrained(): void
  /** A pool slot came free while this exchange waited: open a new connection to `ep`. */
  open(ep: Endpoint): void
}

/**
 * The raw engine's keep-alive pool of one endpoint. Kept beside the Endpoint (a WeakMap), so upstream.ts, which
 * both engines share, knows the pool only as something to close when the endpoint retires.
 */
export class RawPool {
  /** Idle keep-alive connections, the most recently used last (taken first: its socket is warm). */
  readonly idle: UpstreamConn[] = []
  /** Connections open (idle or busy), at most UPSTREAM_CONNECTIONS. */
  open = 0
  /** Exchanges waiting for a connection when `open` is at the cap, oldest first. */
  readonly waiting: ConnUser[] = []

  closeIdle(): void {
    while (this.idle.length > 0) this.idle.pop()!.destroy()
  }
}

const pools = new WeakMap<Endpoint, RawPool>()

/** The raw pool of `ep`, made on first use and registered with the endpoint for its retirement. */
export function rawPool(ep: Endpoint): RawPool {
  let p = pools.get(ep)
  if (p === undefined) {
    p = new RawPool()
    pools.set(ep, p)
    ep.addPool(p)
  }
  return p
}

export const C_CONNECTING = 0
export const C_BUSY = 1
export const C_IDLE = 2
export const C_CLOSED = 3

export class UpstreamConn implements ParserOwner {
  readonly ep: Endpoint
  readonly pool: RawPool
  /** Open upstream connections of the engine (its sweep closes idle ones). */
  readonly #all: Set<UpstreamConn>
  readonly socket: Socket
  readonly parser: Parser
  state = C_CONNECTING
  ex: ConnUser | null
  /** Date.now() of the last read (or of the request write); the read and keep-alive timeouts count from it. */
  last: number
  /** Status of the response being parsed (1xx ones are skipped). */
  status = 0
  /** Whether the endpoint allows reuse after this response. */
  keepAlive = false
  hdrs: string[] = []
  /** Inside parser.execute: a release is deferred until the whole read was parsed (0 none, 1 reuse, 2 close). */
  parsing = false
  deferred = 0
  /** Response bytes arrived with no exchange to read them: the connection is out of step and must not be reused. */
  stray = false
  /** The parser reads the socket's handle directly (as on the downstream side); null: fed from 'data' events. */
  consumed: StreamHandle | null = null

  pauseReading(): void {
    if (this.consumed !== null) this.consumed.readStop()
    else this.socket.pause()
  }

  resumeReading(): void {
    if (this.state === C_CLOSED) return
    if (this.consumed !== null) this.consumed.readStart()
    else this.socket.resume()
  }

  /** After one read was parsed: a deferred release, gathered response bytes, a response that did not parse. */
  afterExecute(r: number | ParseError, ex: ConnUser | null): void {
    this.parsing = false
    this.last = Date.now()
    if (ex !== null && ex.out !== '') ex.flush()
    if (typeof r !== 'number') {
      this.gone('MLT_PROXY_BAD_RESPONSE', r)
      this.destroy()
      return
    }
    const d = this.deferred
    if (d !== 0) {
      this.deferred = 0
      this.release(d === 1)
    } else if (this.stray) this.destroy()
  }

  constructor(all: Set<UpstreamConn>, ep: Endpoint, ex: ConnUser) {
    this.#all = all
    this.ep = ep
    this.pool = rawPool(ep)
    this.ex = ex
    this.last = Date.now()
    this.parser = takeParser(PARSER_RESPONSE, this, 0)
    this.pool.open++
    all.add(this)
    const s = connect({ host: ep.host, port: ep.port, noDelay: true })
    this.socket = s
    s[kUp] = this
    const h = (s as unknown as { _handle: StreamHandle | null })._handle
    if (h !== null && h.isStreamBase === true && h._consumed !== true) {
      h._consumed = true
      this.parser.consume(h)
      this.consumed = h
    } else s.on('data', upOnData)
    s.on('connect', upOnConnect)
    s.on('end', upOnEnd)
    s.on('drain', upOnDrain)
    s.on('error', upOnError)
    s.on('close', upOnClose)
  }

  /** Hands the connection to `ex` (from the idle list or a wait queue). */
  assign(ex: ConnUser): void {
    this.state = C_BUSY
    this.ex = ex
    this.last = Date.now()
    ex.connected(this)
  }

  /** The exchange is done with the connection: back to the pool, to a waiting exchange, or closed. */
  release(reusable: boolean): void {
    this.ex = null
    if (this.parsing) {
      // Still inside execute(): bytes after this response in the same read would be taken for the next
      // exchange's response. Decide once the read is parsed (upOnData).
      this.deferred = reusable ? 1 : 2
      return
    }
    if (!reusable || this.stray || this.ep.retired || this.state !== C_BUSY) {
      this.destroy()
      return
    }
    this.state = C_IDLE
    this.last = Date.now()
    const w = this.pool.waiting.shift()
    if (w !== undefined) this.assign(w)
    else this.pool.idle.push(this)
  }

  destroy(): void {
    if (this.state === C_CLOSED) return
    if (this.state === C_IDLE) {
      const i = this.pool.idle.indexOf(this)
      if (i >= 0) this.pool.idle.splice(i, 1)
    }
    this.state = C_CLOSED
    this.ex = null
    this.socket.destroy()
  }

  /** The socket failed or closed: the exchange (if any) learns why; a waiting exchange gets a new connection. */
  gone(code: string, err: Error | null): void {
    const wasConnecting = this.state === C_CONNECTING
    if (this.state === C_IDLE) {
      const i = this.pool.idle.indexOf(this)
      if (i >= 0) this.pool.idle.splice(i, 1)
    }
    this.state = C_CLOSED
    const ex = this.ex
    this.ex = null
    // Whatever ends a connection attempt means nothing was sent: a connect failure.
    if (ex !== null) ex.upstreamFailed(this, wasConnecting && !isConnectFailure(code) ? 'ECONNREFUSED' : code, err)
  }

  onParserMessageBegin(): void {}

  onParserHeaders(headers: string[]): void {
    for (let i = 0; i < headers.length; i++) this.hdrs.push(headers[i]!)
  }

  onParserHeadersComplete(
    _major: number,
    _minor: number,
    headers: string[] | undefined,
    _method: number,
    _url: string | undefined,
    status: number,
    _upgrade: boolean,
    keepAlive: boolean,
  ): number {
    if (headers === undefined) {
      headers = this.hdrs
      this.hdrs = []
    }
    this.status = status
    this.keepAlive = keepAlive
    const ex = this.ex
    if (ex === null) {
      this.stray = true
      return 0
    }
    if (status < 200) return 0 // 1xx interim responses are not relayed (Expect is answered by meshlet itself)
    ex.responseHead(status, headers)
    return ex.headOnly ? 1 : 0
  }

  onParserBody(chunk: Buffer): void {
    if (this.ex !== null) this.ex.responseBody(chunk)
  }

  onParserMessageComplete(): void {
    const ex = this.ex
    if (this.status >= 200 && ex !== null) {
      // Inside execute(): the connection's release waits until the whole read is parsed (afterExecute).
      this.parsing = true
      ex.responseEnd(this)
    }
  }

  onParserExecute(r: number | ParseError): void {
    if (this.state === C_CLOSED) return
    this.afterExecute(r, this.ex)
  }

  onClose(): void {
    if (this.state !== C_CLOSED) this.gone('UND_ERR_SOCKET', null)
    const h = this.consumed
    if (h !== null) {
      this.consumed = null
      this.parser.unconsume()
      h._consumed = false
    }
    giveBackParser(this.parser)
    this.#all.delete(this)
    this.pool.open--
    // A slot is free: the oldest waiting exchange gets a new connection.
    const w = this.pool.waiting.shift()
    if (w !== undefined && !this.ep.retired) w.open(this.ep)
    else if (w !== undefined) w.upstreamFailed(null, 'UND_ERR_CLOSED', null)
  }
}

function upOf(s: Socket): UpstreamConn {
  return s[kUp]!
}

function upOnConnect(this: Socket): void {
  const c = upOf(this)
  if (c.state !== C_CONNECTING) return
  const ex = c.ex
  if (ex === null) {
    c.state = C_IDLE
    c.release(true)
    return
  }
  c.assign(ex)
}

function upOnData(this: Socket, chunk: Buffer): void {
  const c = upOf(this)
  c.last = Date.now()
  const ex = c.ex
  if (ex === null) {
    // Bytes on an idle connection (not a response to anything): it cannot be trusted for reuse.
    c.destroy()
    return
  }
  c.afterExecute(c.parser.execute(chunk), ex)
}

function upOnEnd(this: Socket): void {
  const c = upOf(this)
  // A close-delimited response ends here.
  const ex = c.ex
  if (ex !== null) {
    c.parsing = true
    c.parser.finish()
    c.parsing = false
    if (ex.out !== '') ex.flush()
    c.deferred = 0
  }
  if (c.state !== C_CLOSED) c.gone('UND_ERR_SOCKET', null)
  this.destroy()
}

function upOnDrain(this: Socket): void {
  const ex = upOf(this).ex
  if (ex !== null) ex.upstreamDrained()
}

function upOnError(this: Socket, err: Error & { code?: string }): void {
  const c = upOf(this)
  if (c.state !== C_CLOSED) c.gone(err.code ?? 'UND_ERR_SOCKET', err)
}

function upOnClose(this: Socket): void {
  upOf(this).onClose()
}
