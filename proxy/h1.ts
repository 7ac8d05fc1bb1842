// The raw HTTP/1.1 engine of the http listener: net sockets both ways, Node's own llhttp binding (the parser
// node:http uses, strict mode, through `_http_common.HTTPParser`) for request and response framing, and meshlet's
// own keep-alive connection pool per endpoint. It exists for throughput: node:http's IncomingMessage/ServerResponse
// streams plus undici cost about 50 µs of CPU per proxied request; this engine writes each response head once,
// with its first body bytes, and allocates one exchange object per request (bench/proxy.ts has the figures).
//
// Safety comes from the parser, not from this file: llhttp in strict mode (no lenient flags) refuses CL+TE,
// duplicate Content-Length, obs-fold, bare LF, bad chunk sizes and invalid header bytes exactly as node:http does;
// this file adds node:http's own checks on top (Host required on HTTP/1.1, 431 on a header overflow, CONNECT 405)
// and shares everything else — normalisation, routing, headers — with the other engine (forward.ts).
//
//   Downstream (one per client connection)             UpstreamConn (one per endpoint connection)
//     socket ── parser(REQUEST) ── H1Exchange ─────────►  socket ── parser(RESPONSE)
//               pending[] (pipelined heads)  ◄── writes ── back to Endpoint.idle when reusable
//
// Timeouts (header, keep-alive, connect, read, send) are checked by one sweep timer per engine instead of a timer
// per request: an exchange only stamps Date.now() on activity.

import { createRequire } from 'node:module'
import { connect, createServer, type Server, type Socket } from 'node:net'
import { STATUS_CODES } from 'node:http'
import {
  ExchangeBase,
  IDEMPOTENT,
  STATUS_TEXT,
  closesConnection,
  dropResponseHeaderName,
  eqLower,
  isConnectFailure,
  replyBody,
  unroutedCode,
  type Forwarder,
  type ListenerInfo,
  type RequestHead,
} from './forward.ts'
import { publishConnectError } from '../model/diagnostics.ts'
import { UPSTREAM_CONNECTIONS, UPSTREAM_KEEPALIVE_MS, type Endpoint } from './upstream.ts'
import { handleUpgrade, isWebSocketUpgrade, writeRawStatus } from './websocket.ts'

// ---------------------------------------------------------------- the parser binding

interface ParseError extends Error {
  code: string
  bytesParsed: number
}

interface Parser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void
  execute(data: Buffer): number | ParseError
  finish(): number | ParseError | undefined
  close(): void
  free(): void
  /** Reads straight from a stream handle in C++ (node:http does this): no 'data' events, kOnExecute per read. */
  consume(handle: object): void
  unconsume(): void
  getCurrentBuffer(): Buffer
  [k: number]: unknown
  /** Ours: the Downstream or UpstreamConn the parser belongs to, and the parser type. */
  owner: unknown
  type: number
}

interface ParserClass {
  new (): Parser
  readonly REQUEST: number
  readonly RESPONSE: number
  readonly kOnMessageBegin: number
  readonly kOnHeaders: number
  readonly kOnHeadersComplete: number
  readonly kOnBody: number
  readonly kOnMessageComplete: number
  readonly kOnExecute: number
}

/** The libuv stream handle of a net.Socket (internal; used only when it says it is a StreamBase). */
interface StreamHandle {
  isStreamBase?: boolean
  _consumed?: boolean
  readStart(): number
  readStop(): number
}

/** `_http_common` is an undocumented Node module; without it the http listener uses the node:http engine. */
function loadParser(): { HTTPParser: ParserClass; methods: string[] } | null {
  try {
    const common = createRequire(import.meta.url)('_http_common') as { HTTPParser?: ParserClass; methods?: string[] }
    if (typeof common.HTTPParser !== 'function' || !Array.isArray(common.methods)) return null
    const p = new common.HTTPParser()
    if (typeof p.initialize !== 'function' || typeof p.execute !== 'function') return null
    return { HTTPParser: common.HTTPParser, methods: common.methods }
  } catch {
    return null
  }
}

const binding = loadParser()
/** Whether the raw engine can run on this Node. */
export const rawEngineAvailable = binding !== null

/** llhttp method ids → names: 0..33 are the HTTP methods in `methods` order, 46 is QUERY; the rest are RTSP. */
const METHODS: (string | undefined)[] = []
if (binding !== null) {
  for (let i = 0; i < 34 && i < binding.methods.length; i++) METHODS[i] = binding.methods[i]
  METHODS[46] = 'QUERY'
}

/**
 * Parsers are kept for reuse like node:http does (its FreeList of 1000): making one costs more than a request. A
 * parser is only closed (its native memory freed) outside its own callbacks, hence the setImmediate.
 */
const requestParsers: Parser[] = []
const responseParsers: Parser[] = []
const PARSER_POOL_MAX = 1000

function takeParser(type: number, owner: unknown, maxHeaderSize: number): Parser {
  const pool = type === binding!.HTTPParser.REQUEST ? requestParsers : responseParsers
  const p = pool.pop() ?? newParser(type)
  p.initialize(type, {}, maxHeaderSize, 0)
  p.owner = owner
  return p
}

function newParser(type: number): Parser {
  const P = binding!.HTTPParser
  const p = new P()
  p.type = type
  // Each callback is a crossing from C++ into JS: a response parser does without message-begin.
  if (type === P.REQUEST) p[P.kOnMessageBegin] = onMessageBegin
  p[P.kOnHeaders] = onHeaders
  p[P.kOnHeadersComplete] = onHeadersComplete
  p[P.kOnBody] = onBody
  p[P.kOnMessageComplete] = onMessageComplete
  p[P.kOnExecute] = onExecute
  return p
}

function closeParser(p: Parser): void {
  p.close()
}

function giveBackParser(p: Parser): void {
  p.owner = null
  p.free()
  const pool = p.type === binding!.HTTPParser.REQUEST ? requestParsers : responseParsers
  if (pool.length < PARSER_POOL_MAX) pool.push(p)
  else setImmediate(closeParser, p)
}

/** Node's default header limit (--max-http-header-size). */
const MAX_HEADER_SIZE = 16384
/** Client keep-alive idle time (ingress-nginx `keep-alive: 75`). */
const CLIENT_KEEPALIVE_MS = 75_000
/** Time allowed to send a request head (ingress-nginx `client-header-timeout: 60`). */
const CLIENT_HEADER_TIMEOUT_MS = 60_000
/** Sweep period of the timeout checks. */
const SWEEP_MS = 200
/** Methods whose empty body is sent as `content-length: 0` (as undici does). */
const PAYLOAD_METHODS = new Set(['POST', 'PUT', 'PATCH'])

const CRLF_0 = '0\r\n\r\n'
/** Response pieces up to this size are gathered into one write. */
const COALESCE_MAX = 16384
const CONTINUE = 'HTTP/1.1 100 Continue\r\n\r\n'

// ---------------------------------------------------------------- downstream (client connections)

/** A request head parsed while an earlier request on the connection is still being answered (pipelining). */
interface Pending {
  readonly head: RequestHead
  readonly keepAlive: boolean
  /** Body bytes received so far. */
  readonly body: Buffer[]
  complete: boolean
}

/** Where the body bytes of the request being parsed go. */
type Sink = H1Exchange | Pending | null

class Downstream {
  readonly engine: H1Engine
  readonly socket: Socket
  readonly parser: Parser
  readonly remote: string
  /** The exchange whose response is being produced; null between requests. */
  active: H1Exchange | null = null
  /** Receives body bytes of the request being parsed (the active exchange, a pending head, or nothing). */
  sink: Sink = null
  pending: Pending[] = []
  /** kOnHeaders accumulators (heads with more than 32 header lines arrive in parts). */
  hdrs: string[] = []
  url = ''
  /** Date.now() when the current request head began; 0 when not inside a head. */
  headStart = 0
  /** Date.now() when the connection became idle; 0 while a request is in progress. */
  idleSince: number
  /** Close after the current response (Connection: close, HTTP/1.0, an error, draining). */
  closeAfter = false
  /** Reading paused by us (backpressure or pipelining); counted so one resume does not undo another's pause. */
  pauses = 0
  upgraded = false
  closed = false
  /** The parser reads the socket's handle directly (see Parser.consume); null: it is fed from 'data' events. */
  consumed: StreamHandle | null = null

  constructor(engine: H1Engine, socket: Socket) {
    this.engine = engine
    this.socket = socket
    this.remote = socket.remoteAddress ?? ''
    this.idleSince = Date.now()
    this.parser = takeParser(binding!.HTTPParser.REQUEST, this, MAX_HEADER_SIZE)
    ;(socket as unknown as { [kDown]: Downstream })[kDown] = this
    socket.setNoDelay(true)
    const h = (socket as unknown as { _handle: StreamHandle | null })._handle
    if (h !== null && h.isStreamBase === true && h._consumed !== true) {
      // What node:http does: the parser reads in C++, sparing the Readable stream machinery on every read.
      h._consumed = true
      this.parser.consume(h)
      this.consumed = h
    } else socket.on('data', downOnData)
    socket.on('drain', downOnDrain)
    socket.on('end', downOnEnd)
    socket.on('error', downOnError)
    socket.on('close', downOnClose)
  }

  pause(): void {
    if (this.pauses++ === 0) {
      // A consumed handle does not go through the Readable: stop reading at the handle.
      if (this.consumed !== null) this.consumed.readStop()
      else this.socket.pause()
    }
  }

  resume(): void {
    if (this.pauses > 0 && --this.pauses === 0 && !this.closed) {
      if (this.consumed !== null) this.consumed.readStart()
      else this.socket.resume()
    }
  }

  onData(chunk: Buffer): void {
    if (this.upgraded || this.closed || this.upgradeDropped) return
    this.afterExecute(this.parser.execute(chunk), chunk)
  }

  /** After one read was parsed: errors, and the switch to a tunnel after an upgrade request. */
  afterExecute(r: number | ParseError, chunk: Buffer | null): void {
    if (typeof r !== 'number') {
      this.parseError(r)
      return
    }
    if (this.upgradeDropped && this.sink === null && !this.droppedPaused) {
      // What follows a dropped upgrade is not HTTP to read: stop reading; the connection ends after the response.
      this.droppedPaused = true
      this.pause()
    }
    const up = this.upgradeHead
    if (up !== null) {
      this.upgradeHead = null
      this.startUpgrade(up, (chunk ?? this.parser.getCurrentBuffer()).subarray(r))
    }
  }

  upgradeHead: RequestHead | null = null
  /** An upgrade was refused or answered as plain HTTP: bytes after it are not parsed (llhttp took them as the new protocol). */
  upgradeDropped = false
  droppedPaused = false

  /** A request the parser refused: 400 (431 for an oversized head) and close, as node:http answers. */
  parseError(err: ParseError): void {
    this.closeAfter = true
    const ex = this.active
    if (ex !== null) {
      // Broken framing inside a request being forwarded (a bad chunk): it cannot continue.
      ex.abort(400)
      return
    }
    if (this.sink !== null || err.code === 'HPE_CLOSED_CONNECTION') {
      this.socket.destroy()
      return
    }
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400
    this.engine.fwd.metrics.countUnrouted(status)
    this.writeReply(status, null, true, false)
  }

  /** Starts (or queues behind the active exchange) the request whose head just completed. */
  onHead(head: RequestHead, keepAlive: boolean, upgrade: boolean): void {
    this.headStart = 0
    this.idleSince = 0
    if (upgrade) {
      if (head.method === 'CONNECT') {
        this.closeAfter = true
        this.engine.fwd.metrics.countUnrouted(405)
        this.sink = null
        writeRawStatus(this.socket, 405)
        return
      }
      if (this.active !== null || this.pending.length > 0) {
        // An upgrade pipelined behind another request: it cannot be tunnelled in order; the connection ends after
        // the response in progress (nothing of it reaches an endpoint).
        this.closeAfter = true
        this.sink = null
        this.upgradeHead = null
        this.upgradeDropped = true
        return
      }
      if (isWebSocketUpgrade(head.rawHeaders)) {
        this.upgradeHead = head
        this.sink = null
        return
      }
      // Upgrade to anything but websocket (h2c, …) is not a protocol meshlet switches to: the request is plain HTTP
      // (its Upgrade header dropped); llhttp takes what follows for the new protocol, so the connection ends after it.
      this.closeAfter = true
      this.upgradeDropped = true
    }
    if (this.active !== null || this.pending.length > 0) {
      const p: Pending = { head, keepAlive, body: [], complete: false }
      this.pending.push(p)
      this.sink = p
      if (this.pending.length === 1) this.pause()
      return
    }
    this.start(head, keepAlive, null)
  }

  start(head: RequestHead, keepAlive: boolean, pending: Pending | null): void {
    if (!keepAlive) this.closeAfter = true
    const fwd = this.engine.fwd
    // llhttp takes `HTTP/2.0` (and 0.9) on a request line: only HTTP/1.0 and 1.1 are spoken here (nginx: 505).
    // node:http's requireHostHeader: HTTP/1.1 without Host is a 400.
    let st = badVersion(head) ? 505 : head.httpVersionMinor === 1 && !hasHost(head.rawHeaders) ? 400 : 0
    if (st === 0) st = fwd.prepare(head, this.remote, this.engine.li, false)
    if (st !== 0) {
      if (pending === null || this.sink === pending) this.sink = null
      const id = st === 400 ? null : fwd.newRequestId()
      fwd.metrics.countUnrouted(st)
      if (fwd.access !== null)
        fwd.access.info(
          { method: head.method, url: head.url, status: st, code: unroutedCode(st), requestId: id },
          'request',
        )
      if (closesConnection(st)) this.closeAfter = true
      this.writeReply(st, id, this.closeAfter, head.httpVersionMinor === 0)
      if (!this.closeAfter) this.next()
      return
    }
    const ex = new H1Exchange(this, head, fwd)
    this.active = ex
    if (pending === null) this.sink = ex
    else {
      for (const b of pending.body) ex.body(b)
      if (pending.complete) ex.bodyEnd()
      else if (this.sink === pending) this.sink = ex
    }
    if (!ex.done) ex.begin()
  }

  /** The active exchange ended: close, or go on with the next pipelined request, or wait for one. */
  exchangeDone(ex: H1Exchange): void {
    if (this.active !== ex) return
    this.active = null
    if (this.sink === ex) {
      // The response ended before the request body did (an early answer): the rest of the body is not read.
      this.sink = null
      this.closeAfter = true
    }
    this.next()
  }

  next(): void {
    if (this.closeAfter || this.engine.closing) {
      this.end()
      return
    }
    const p = this.pending.shift()
    if (p === undefined) {
      this.idleSince = Date.now()
      return
    }
    if (this.pending.length === 0) this.resume()
    this.start(p.head, p.keepAlive, p)
  }

  /** A built-in answer (no upstream), written in one piece. */
  writeReply(status: number, requestId: string | null, close: boolean, http10: boolean): void {
    if (this.closed) return
    const body = replyBody(status)
    let head = `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? STATUS_CODES[status] ?? ''}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${body.length}\r\n`
    if (requestId !== null) head += `x-request-id: ${requestId}\r\n`
    if (close) head += 'connection: close\r\n'
    else if (http10) head += 'connection: keep-alive\r\n'
    this.socket.write(head + '\r\n' + body, 'latin1')
    if (close) this.end()
  }

  end(): void {
    if (this.closed) return
    this.closed = true
    this.socket.destroySoon()
    this.engine.downstreams.delete(this)
  }

  startUpgrade(head: RequestHead, rest: Buffer): void {
    const socket = this.socket
    this.upgraded = true
    this.engine.downstreams.delete(this)
    socket.removeListener('data', downOnData)
    socket.removeListener('drain', downOnDrain)
    socket.removeListener('end', downOnEnd)
    socket.removeListener('error', downOnError)
    socket.removeListener('close', downOnClose)
    this.releaseParser()
    if (this.pauses > 0) socket.resume()
    if (!hasHost(head.rawHeaders) && head.httpVersionMinor === 1) {
      this.engine.fwd.metrics.countUnrouted(400)
      writeRawStatus(socket, 400)
      return
    }
    handleUpgrade(this.engine.fwd, head, this.remote, socket, rest, this.engine.li)
  }

  releaseParser(): void {
    const h = this.consumed
    if (h !== null) {
      this.consumed = null
      this.parser.unconsume()
      h._consumed = false
      if (this.pauses > 0) h.readStart()
    }
    giveBackParser(this.parser)
  }

  onClose(): void {
    this.closed = true
    this.engine.downstreams.delete(this)
    this.releaseParser()
    const ex = this.active
    if (ex !== null && !ex.done) ex.clientGone()
    this.pending.length = 0
  }
}

const kDown = Symbol('meshlet.downstream')

function downOf(s: Socket): Downstream {
  return (s as unknown as { [kDown]: Downstream })[kDown]
}

function downOnData(this: Socket, chunk: Buffer): void {
  downOf(this).onData(chunk)
}

function downOnDrain(this: Socket): void {
  const ex = downOf(this).active
  if (ex !== null) ex.downstreamDrained()
}

/** The client half-closed (allowHalfOpen, as node:http): finish the response in progress, then close. */
function downOnEnd(this: Socket): void {
  const d = downOf(this)
  if (d.sink !== null) {
    // The client left in the middle of a request body: it can never complete. Cut both sides now, so the endpoint's
    // connection (one of its pool's slots) is freed instead of waiting on a body that will not come.
    this.destroy()
    return
  }
  d.closeAfter = true
  if (d.active === null && d.pending.length === 0) d.end()
}

function downOnError(this: Socket): void {
  this.destroy()
}

function downOnClose(this: Socket): void {
  downOf(this).onClose()
}

function badVersion(head: RequestHead): boolean {
  return head.httpVersionMajor !== 1 || head.httpVersionMinor > 1
}

function hasHost(raw: readonly string[]): boolean {
  for (let i = 0; i < raw.length; i += 2) {
    const n = raw[i]!
    if (n.length === 4 && eqLower(n, 'host')) return true
  }
  return false
}

// Parser callbacks: one set for both parser types (pooled parsers change owner); `this` is the parser.

function onMessageBegin(this: Parser): void {
  const o = this.owner
  if (o instanceof Downstream) o.headStart = Date.now()
}

function onHeaders(this: Parser, headers: string[], url: string): void {
  const o = this.owner as Downstream | UpstreamConn
  for (let i = 0; i < headers.length; i++) o.hdrs.push(headers[i]!)
  if (o instanceof Downstream) o.url += url
}

function onHeadersComplete(
  this: Parser,
  major: number,
  minor: number,
  headers: string[] | undefined,
  method: number,
  url: string | undefined,
  status: number,
  statusMessage: string,
  upgrade: boolean,
  keepAlive: boolean,
): number {
  const o = this.owner
  if (o instanceof Downstream) return reqOnHeadersComplete(o, major, minor, headers, method, url, upgrade, keepAlive)
  if (o instanceof UpstreamConn) {
    if (headers === undefined) {
      headers = o.hdrs
      o.hdrs = []
    }
    return resOnHeadersComplete(o, headers, status, keepAlive)
  }
  void statusMessage
  return 0
}

function onExecute(this: Parser, r: number | ParseError): void {
  const o = this.owner
  if (o instanceof Downstream) {
    if (!o.upgraded && !o.closed) o.afterExecute(r, null)
  } else if (o instanceof UpstreamConn) {
    if (o.state === C_CLOSED) return
    o.afterExecute(r, o.ex)
  }
}

function onBody(this: Parser, chunk: Buffer): void {
  const o = this.owner
  if (o instanceof Downstream) reqOnBody(o, chunk)
  else if (o instanceof UpstreamConn && o.ex !== null) o.ex.responseBody(chunk)
}

function onMessageComplete(this: Parser): void {
  const o = this.owner
  if (o instanceof Downstream) reqOnMessageComplete(o)
  else if (o instanceof UpstreamConn && o.status >= 200 && o.ex !== null) {
    // Inside execute(): the connection's release waits until the whole read is parsed (afterExecute).
    o.parsing = true
    o.ex.responseEnd(o)
  }
}

function reqOnHeadersComplete(
  d: Downstream,
  major: number,
  minor: number,
  headers: string[] | undefined,
  method: number,
  url: string | undefined,
  upgrade: boolean,
  keepAlive: boolean,
): number {
  if (headers === undefined) {
    headers = d.hdrs
    d.hdrs = []
  }
  if (url === undefined) {
    url = d.url
    d.url = ''
  }
  const name = METHODS[method]
  if (name === undefined) {
    // An RTSP method llhttp knows but HTTP does not.
    d.closeAfter = true
    d.engine.fwd.metrics.countUnrouted(400)
    d.writeReply(400, null, true, false)
    return 0
  }
  d.onHead(
    { method: name, url, rawHeaders: headers, httpVersionMajor: major, httpVersionMinor: minor },
    keepAlive,
    upgrade,
  )
  return 0
}

function reqOnBody(d: Downstream, chunk: Buffer): void {
  const sink = d.sink
  if (sink === null) return
  if (sink instanceof H1Exchange) sink.body(chunk)
  else sink.body.push(chunk)
}

function reqOnMessageComplete(d: Downstream): void {
  const sink = d.sink
  d.sink = null
  if (sink === null) return
  if (sink instanceof H1Exchange) sink.bodyEnd()
  else sink.complete = true
}

// ---------------------------------------------------------------- upstream (endpoint connections)

const C_CONNECTING = 0
const C_BUSY = 1
const C_IDLE = 2
const C_CLOSED = 3

export class UpstreamConn {
  readonly engine: H1Engine
  readonly ep: Endpoint
  readonly socket: Socket
  readonly parser: Parser
  state = C_CONNECTING
  ex: H1Exchange | null
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
  afterExecute(r: number | ParseError, ex: H1Exchange | null): void {
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

  constructor(engine: H1Engine, ep: Endpoint, ex: H1Exchange) {
    this.engine = engine
    this.ep = ep
    this.ex = ex
    this.last = Date.now()
    this.parser = takeParser(binding!.HTTPParser.RESPONSE, this, 0)
    ep.open++
    engine.upstreams.add(this)
    const s = connect({ host: ep.host, port: ep.port, noDelay: true })
    this.socket = s
    ;(s as unknown as { [kUp]: UpstreamConn })[kUp] = this
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
  assign(ex: H1Exchange): void {
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
    const w = this.ep.waiting.shift()
    if (w !== undefined) this.assign(w)
    else this.ep.idle.push(this)
  }

  destroy(): void {
    if (this.state === C_CLOSED) return
    if (this.state === C_IDLE) {
      const i = this.ep.idle.indexOf(this)
      if (i >= 0) this.ep.idle.splice(i, 1)
    }
    this.state = C_CLOSED
    this.ex = null
    this.socket.destroy()
  }

  /** The socket failed or closed: the exchange (if any) learns why; a waiting exchange gets a new connection. */
  gone(code: string, err: Error | null): void {
    const wasConnecting = this.state === C_CONNECTING
    if (this.state === C_IDLE) {
      const i = this.ep.idle.indexOf(this)
      if (i >= 0) this.ep.idle.splice(i, 1)
    }
    this.state = C_CLOSED
    const ex = this.ex
    this.ex = null
    // Whatever ends a connection attempt means nothing was sent: a connect failure.
    if (ex !== null) ex.upstreamFailed(this, wasConnecting && !isConnectFailure(code) ? 'ECONNREFUSED' : code, err)
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
    this.engine.upstreams.delete(this)
    this.ep.open--
    // A slot is free: the oldest waiting exchange gets a new connection.
    const w = this.ep.waiting.shift()
    if (w !== undefined && !this.ep.retired) w.open(this.ep)
    else if (w !== undefined) w.upstreamFailed(null, 'UND_ERR_CLOSED', null)
  }
}

const kUp = Symbol('meshlet.upstream')

function upOf(s: Socket): UpstreamConn {
  return (s as unknown as { [kUp]: UpstreamConn })[kUp]
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

function resOnHeadersComplete(c: UpstreamConn, headers: string[], status: number, keepAlive: boolean): number {
  c.status = status
  c.keepAlive = keepAlive
  const ex = c.ex
  if (ex === null) {
    c.stray = true
    return 0
  }
  if (status < 200) return 0 // 1xx interim responses are not relayed (Expect is answered by meshlet itself)
  ex.responseHead(status, headers)
  return ex.headOnly ? 1 : 0
}

// ---------------------------------------------------------------- the exchange

/** One request on the raw engine: writes the request to an upstream connection and relays the response. */
export class H1Exchange extends ExchangeBase {
  readonly down: Downstream
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

  constructor(down: Downstream, head: RequestHead, fwd: Forwarder) {
    super(fwd, down.engine.li, head.method, fwd.p)
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
    const idle = ep.idle.pop()
    if (idle !== undefined) idle.assign(this)
    else if (ep.open < UPSTREAM_CONNECTIONS) this.open(ep)
    else {
      this.queuedAt = Date.now()
      ep.waiting.push(this)
    }
  }

  open(ep: Endpoint): void {
    this.queuedAt = 0
    this.conn = new UpstreamConn(this.down.engine, ep, this)
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
    if (down.closeAfter || down.engine.closing) {
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
    const i = ep.waiting.indexOf(this)
    if (i >= 0) ep.waiting.splice(i, 1)
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

// ---------------------------------------------------------------- the listener

export class H1Engine {
  readonly fwd: Forwarder
  readonly li: ListenerInfo
  readonly server: Server
  readonly downstreams = new Set<Downstream>()
  readonly upstreams = new Set<UpstreamConn>()
  closing = false
  /** Client connections allowed at once (proxy/limits.ts); tunnels count too. */
  readonly maxConnections: number
  /** Client sockets open (downstreams and tunnels). */
  connections = 0
  /** Idle keep-alive connections closed to make room at the cap, and connections refused there (none idle). */
  closedForRoom = 0
  refused = 0
  #sweep: NodeJS.Timeout | null = null
  readonly #onSocketClose = (): void => {
    this.connections--
  }

  constructor(fwd: Forwarder, li: ListenerInfo, maxConnections: number) {
    this.fwd = fwd
    this.li = li
    this.maxConnections = maxConnections
    this.server = createServer({ noDelay: true, allowHalfOpen: true }, (socket) => {
      if (this.closing) {
        socket.destroy()
        return
      }
      if (this.connections >= this.maxConnections && !this.#makeRoom()) {
        this.refused++
        socket.destroy()
        return
      }
      this.connections++
      socket.once('close', this.#onSocketClose)
      this.downstreams.add(new Downstream(this, socket))
    })
    this.#sweep = setInterval(() => this.#check(), SWEEP_MS)
    this.#sweep.unref()
  }

  #check(): void {
    const now = Date.now()
    for (const d of this.downstreams) {
      const ex = d.active
      if (ex !== null) ex.sweep(now)
      else if (d.headStart > 0) {
        if (now - d.headStart >= CLIENT_HEADER_TIMEOUT_MS) {
          d.engine.fwd.metrics.countUnrouted(408)
          d.writeReply(408, null, true, false)
        }
      } else if (d.idleSince > 0 && d.pending.length === 0 && now - d.idleSince >= CLIENT_KEEPALIVE_MS) d.end()
    }
    for (const c of this.upstreams) {
      if (c.state === C_IDLE && now - c.last >= UPSTREAM_KEEPALIVE_MS) c.destroy()
    }
  }

  /**
   * At the cap: closes the longest-connected idle keep-alive connection (the Set is in accept order), as nginx reuses
   * idle keep-alive connections when worker_connections run out. False when every connection is busy.
   */
  #makeRoom(): boolean {
    for (const d of this.downstreams) {
      if (d.active === null && d.pending.length === 0 && d.headStart === 0 && !d.closed) {
        this.closedForRoom++
        d.socket.destroy()
        return true
      }
    }
    return false
  }

  /** Stops accepting; idle connections close now, busy ones after their response. */
  stopAccepting(): Promise<void> {
    this.closing = true
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()))
    this.closeIdle()
    return closed
  }

  closeIdle(): void {
    for (const d of this.downstreams) if (d.active === null && d.headStart === 0 && d.pending.length === 0) d.end()
  }

  closeAll(): void {
    if (this.#sweep !== null) clearInterval(this.#sweep)
    this.#sweep = null
    for (const d of this.downstreams) d.socket.destroy()
    this.downstreams.clear()
  }
}
