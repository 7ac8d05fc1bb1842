// The raw engine's client side: one Downstream per client connection (a net socket read by a REQUEST parser):
// request heads in order (pipelining), node:http's own checks on top of the parser (Host required on HTTP/1.1, 431
// on a header overflow, CONNECT 405, HTTP versions), built-in answers, and the hand-over of a WebSocket upgrade.
//
// Safety comes from the parser, not from this file: llhttp in strict mode (no lenient flags) refuses CL+TE,
// duplicate Content-Length, obs-fold, bare LF, bad chunk sizes and invalid header bytes exactly as node:http does.

import { STATUS_CODES } from 'node:http'
import type { Socket } from 'node:net'
import type { Forwarder, ListenerInfo, RequestHead } from '../forward/forwarder.ts'
import { eqLower } from '../http/headers.ts'
import { closesConnection, replyBody, STATUS_TEXT, unroutedCode, writeRawStatus } from '../http/status.ts'
import { handleUpgrade, isWebSocketUpgrade } from '../websocket.ts'
import { H1Exchange, type ExchangeClient } from './exchange.ts'
import {
  giveBackParser,
  METHODS,
  PARSER_REQUEST,
  takeParser,
  type ParseError,
  type Parser,
  type ParserOwner,
  type StreamHandle,
} from './parser.ts'
import type { UpstreamConn } from './upstream-conn.ts'

/** The Downstream of a client socket, for the socket's event handlers (shared functions: no closure per connection). */
const kDown: unique symbol = Symbol('meshlet.downstream')

declare module 'node:net' {
  interface Socket {
    [kDown]?: Downstream
  }
}

/** Node's default header limit (--max-http-header-size). */
const MAX_HEADER_SIZE = 16384

/** What a Downstream needs of its engine (H1Engine). */
export interface DownstreamEngine {
  readonly fwd: Forwarder
  readonly li: ListenerInfo
  readonly downstreams: Set<Downstream>
  readonly upstreams: Set<UpstreamConn>
  readonly closing: boolean
}

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

export class Downstream implements ExchangeClient, ParserOwner {
  readonly engine: DownstreamEngine
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

  constructor(engine: DownstreamEngine, socket: Socket) {
    this.engine = engine
    this.socket = socket
    this.remote = socket.remoteAddress ?? ''
    this.idleSince = Date.now()
    this.parser = takeParser(PARSER_REQUEST, this, MAX_HEADER_SIZE)
    socket[kDown] = this
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

  get li(): ListenerInfo {
    return this.engine.li
  }

  get upstreams(): Set<UpstreamConn> {
    return this.engine.upstreams
  }

  get draining(): boolean {
    return this.engine.closing
  }

  onParserMessageBegin(): void {
    this.headStart = Date.now()
  }

  onParserHeaders(headers: string[], url: string): void {
    for (let i = 0; i < headers.length; i++) this.hdrs.push(headers[i]!)
    this.url += url
  }

  onParserHeadersComplete(
    major: number,
    minor: number,
    headers: string[] | undefined,
    method: number,
    url: string | undefined,
    _status: number,
    upgrade: boolean,
    keepAlive: boolean,
  ): number {
    return reqOnHeadersComplete(this, major, minor, headers, method, url, upgrade, keepAlive)
  }

  onParserBody(chunk: Buffer): void {
    reqOnBody(this, chunk)
  }

  onParserMessageComplete(): void {
    reqOnMessageComplete(this)
  }

  onParserExecute(r: number | ParseError): void {
    if (!this.upgraded && !this.closed) this.afterExecute(r, null)
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

function downOf(s: Socket): Downstream {
  return s[kDown]!
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
