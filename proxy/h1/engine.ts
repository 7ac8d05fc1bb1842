// The raw HTTP/1.1 engine of the http listener: net sockets both ways, Node's own llhttp binding for framing
// (h1/parser.ts), and meshlet's own keep-alive pool per endpoint. It exists for throughput: node:http's
// IncomingMessage/ServerResponse streams plus undici cost about 50 µs of CPU per proxied request; this engine writes
// each response head once, with its first body bytes, and allocates one exchange object per request
// (bench/proxy.ts has the figures). It shares everything up to the route — normalisation, routing, headers — with
// the other engine (forward/).
//
//   Downstream (one per client connection)             UpstreamConn (one per endpoint connection)
//     socket ── parser(REQUEST) ── H1Exchange ─────────►  socket ── parser(RESPONSE)
//               pending[] (pipelined heads)  ◄── writes ── back to RawPool.idle when reusable
//
//   imports: engine → downstream → exchange → upstream-conn → parser (one way)
//
// Timeouts (header, keep-alive, connect, read, send) are checked by one sweep timer per engine instead of a timer
// per request: an exchange only stamps Date.now() on activity.

import { createServer, type Server } from 'node:net'
import type { Forwarder, ListenerInfo } from '../forward/forwarder.ts'
import { UPSTREAM_KEEPALIVE_MS } from '../upstream.ts'
import { Downstream } from './downstream.ts'
import { C_IDLE, type UpstreamConn } from './upstream-conn.ts'

export { rawEngineAvailable } from './parser.ts'

/** Client keep-alive idle time (ingress-nginx `keep-alive: 75`). */
const CLIENT_KEEPALIVE_MS = 75_000
/** Time allowed to send a request head (ingress-nginx `client-header-timeout: 60`). */
const CLIENT_HEADER_TIMEOUT_MS = 60_000
/** Sweep period of the timeout checks. */
const SWEEP_MS = 200

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
