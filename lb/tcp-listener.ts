// A TCP listener on one (address, port) of a Service port. Open only while its list has endpoints (closed, the kernel
// refuses at once, as kube-proxy's REJECT does); closing stops new connections and leaves established ones running.
// Each connection: pick (affinity, round robin), dial with the userspace kube-proxy's retry schedule, then copy both
// ways with backpressure and half-close (specs/l4-health.md §3.5) through shared handlers: stream.pipe() would add
// seven closures and listeners per direction, a measurable share of the CPU a short connection costs.

import { connect, createServer, type Server, type Socket } from 'node:net'
import { publishConnectError } from '../model/diagnostics.ts'
import type { EndpointState, UpstreamReporter } from '../model/snapshot.ts'
import type { LbErrorCode } from './errors.ts'
import type { LbMetrics } from './lb-metrics.ts'
import type { ListenerKind, PortRuntime } from './port-runtime.ts'
import { proxyHeader } from './proxy-protocol.ts'

/** Connect timeouts of successive attempts, each to the next endpoint in rotation this connection has not tried. */
export const DIAL_TIMEOUTS_MS = [250, 500, 1000, 2000] as const

export type ListenerState = 'closed' | 'opening' | 'open' | 'error'

export interface ListenerDeps {
  readonly metrics: LbMetrics
  readonly reporter: UpstreamReporter
  readonly onState: (l: BaseListener) => void
}

/** What TCP and UDP listeners share: identity, the wanted/actual state machine, and the runtime they serve. */
export abstract class BaseListener {
  readonly id: string
  readonly protocol: 'TCP' | 'UDP'
  readonly address: string
  readonly port: number
  kind: ListenerKind
  runtime: PortRuntime
  state: ListenerState = 'closed'
  error: string | null = null
  /** Why the listener is in error (MLT_LB_BIND, MLT_LB_VIP_INTERFACE), for /status readers and the log line. */
  code: LbErrorCode | null = null
  /**
   * Client connections reset because no endpoint could be dialled (MLT_LB_NO_UPSTREAM), and when the last one was
   * (epoch ms): /status shows them per listener, beside the per-Service meshlet_lb_refused_total.
   */
  refused = 0
  refusedAt = 0
  protected wanted = false
  readonly deps: ListenerDeps

  constructor(
    protocol: 'TCP' | 'UDP',
    address: string,
    port: number,
    kind: ListenerKind,
    runtime: PortRuntime,
    deps: ListenerDeps,
  ) {
    this.id = `${protocol}|${address}|${port}`
    this.protocol = protocol
    this.address = address
    this.port = port
    this.kind = kind
    this.runtime = runtime
    this.deps = deps
  }

  /** Open when `open` is true, close otherwise; idempotent, safe while a bind is in progress. */
  want(open: boolean): void {
    this.wanted = open
    if (open && (this.state === 'closed' || this.state === 'error')) this.startOpen()
    else if (!open && this.state === 'open') this.doClose()
  }

  protected setState(state: ListenerState, error: string | null = null, code: LbErrorCode | null = null): void {
    this.state = state
    this.error = error
    this.code = code
    this.deps.onState(this)
    if (state === 'open' && !this.wanted) this.doClose()
    else if (state === 'closed' && this.wanted) this.startOpen()
  }

  protected abstract startOpen(): void
  protected abstract doClose(): void
  /** Closes the listener and, for UDP, its flows; TCP connections are left to finish until `deadline`. */
  abstract shutdown(deadline: number): Promise<void>
}

/** Marks each client and upstream socket with its connection, so the handlers below are shared by all sockets. */
const CONN = Symbol('meshlet.lb.conn')
type ConnSocket = Socket & { [CONN]?: TcpConn }

/** One proxied connection: fixed shape, no per-connection closures (STYLE.md hot-path rules). */
class TcpConn {
  readonly listener: TcpListener
  readonly runtime: PortRuntime
  readonly client: ConnSocket
  upstream: ConnSocket | null = null
  endpoint: EndpointState | null = null
  /** Endpoints this connection failed to reach, excluded from its retries; allocated on the first failure only. */
  tried: EndpointState[] | null = null
  attempt = 0
  timer: NodeJS.Timeout | null = null
  connected = false

  constructor(listener: TcpListener, runtime: PortRuntime, client: ConnSocket) {
    this.listener = listener
    this.runtime = runtime
    this.client = client
  }
}

export class TcpListener extends BaseListener {
  #server: Server | null = null
  readonly #conns = new Set<Socket>()
  readonly #onConnection = (s: Socket) => this.#accept(s)

  constructor(address: string, port: number, kind: ListenerKind, runtime: PortRuntime, deps: ListenerDeps) {
    super('TCP', address, port, kind, runtime, deps)
  }

  protected startOpen(): void {
    this.state = 'opening'
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, this.#onConnection)
    this.#server = server
    server.once('error', (err: NodeJS.ErrnoException) => {
      this.#server = null
      this.setState(
        'error',
        `${err.code ?? 'error'}: cannot listen on ${this.address}:${this.port} (${err.message})`,
        'MLT_LB_BIND',
      )
    })
    server.listen({ host: this.address, port: this.port, exclusive: true }, () => {
      server.removeAllListeners('error')
      server.on('error', () => {})
      this.setState('open')
    })
  }

  protected doClose(): void {
    const server = this.#server
    this.#server = null
    server?.close()
    this.setState('closed')
  }

  #accept(client: ConnSocket): void {
    const rt = this.runtime
    const m = rt.metrics
    m.tcpConnections.inc()
    m.tcpActive.inc()
    this.#conns.add(client)
    const conn = new TcpConn(this, rt, client)
    client[CONN] = conn
    client.on('close', onClientClose)
    client.on('error', onClientError)
    // The peer address costs a getpeername(2): read only when affinity keys on it.
    const first = rt.pick(this.kind, rt.affinity ? (client.remoteAddress ?? '') : '', Date.now())
    if (!first) {
      m.refused.inc()
      this.noteRefused()
      client.resetAndDestroy()
      return
    }
    dial(conn, first)
  }

  /** Called once per client socket when it closes. */
  release(client: Socket, runtime: PortRuntime): void {
    if (this.#conns.delete(client)) runtime.metrics.tcpActive.dec()
  }

  async shutdown(deadline: number): Promise<void> {
    this.want(false)
    while (this.#conns.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
    for (const c of this.#conns) c.destroy()
  }

  get connections(): number {
    return this.#conns.size
  }

  /** A client was reset: every dial failed, or no endpoint was usable for it (MLT_LB_NO_UPSTREAM). */
  noteRefused(): void {
    this.refused++
    this.refusedAt = Date.now()
  }
}

/** Dials `ep` with the timeout of the connection's current attempt. */
function dial(conn: TcpConn, ep: EndpointState): void {
  const upstream: ConnSocket = connect({ host: ep.ip, port: ep.port, allowHalfOpen: true, noDelay: true })
  upstream[CONN] = conn
  conn.upstream = upstream
  conn.endpoint = ep
  conn.timer = setTimeout(onDialTimeout, DIAL_TIMEOUTS_MS[conn.attempt], upstream)
  upstream.on('error', onUpstreamError)
  upstream.on('close', onUpstreamClose)
  upstream.once('connect', onUpstreamConnect)
}

function onDialTimeout(upstream: Socket): void {
  upstream.destroy(new Error('connect timeout'))
}

function onUpstreamConnect(this: ConnSocket): void {
  const conn = this[CONN]!
  clearTimeout(conn.timer!)
  conn.timer = null
  const ep = conn.endpoint!
  const rt = conn.runtime
  conn.listener.deps.reporter.report(rt.svc.key, ep.ip, ep.port, true)
  const client = conn.client
  if (client.destroyed) {
    this.destroy()
    return
  }
  conn.connected = true
  if (rt.proxyProtocol) {
    this.write(
      proxyHeader(
        rt.proxyProtocol,
        'TCP',
        client.remoteAddress ?? '',
        client.remotePort ?? 0,
        client.localAddress ?? '',
        client.localPort ?? 0,
      ),
    )
  }
  // A FIN is passed on as a FIN: 'end' ends the other side's writable half while allowHalfOpen keeps its readable
  // half working. Resets and vanished sides are handled by the close and error handlers.
  client.on('data', onData)
  client.on('end', onEnd)
  client.on('drain', onDrain)
  this.on('data', onData)
  this.on('end', onEnd)
  this.on('drain', onDrain)
  client.resume()
}

/** Before the connect: a failed dial, retried on the next endpoint in rotation. After it: a reset, passed on. */
function onUpstreamError(this: ConnSocket, err: Error): void {
  const conn = this[CONN]!
  if (conn.upstream !== this) return
  if (conn.connected) {
    conn.client.resetAndDestroy()
    return
  }
  clearTimeout(conn.timer!)
  conn.timer = null
  const rt = conn.runtime
  const ep = conn.endpoint!
  const listener = conn.listener
  listener.deps.reporter.report(rt.svc.key, ep.ip, ep.port, false)
  publishConnectError('lb', rt.svc.key, ep.ip, ep.port, err)
  rt.metrics.connectFailures.inc()
  const client = conn.client
  if (client.destroyed) return
  conn.attempt++
  if (conn.tried === null) conn.tried = [ep]
  else conn.tried.push(ep)
  const next =
    conn.attempt < DIAL_TIMEOUTS_MS.length
      ? rt.retry(listener.kind, client.remoteAddress ?? '', Date.now(), conn.tried)
      : null
  if (next) dial(conn, next)
  else {
    rt.metrics.refused.inc()
    listener.noteRefused()
    client.resetAndDestroy()
  }
}

/** The other socket of a connected pair. */
function peerOf(s: ConnSocket): ConnSocket {
  const conn = s[CONN]!
  return s === conn.client ? conn.upstream! : conn.client
}

/** Copies a chunk to the other side; a full write buffer pauses this side until the other drains. */
function onData(this: ConnSocket, chunk: Buffer): void {
  const peer = peerOf(this)
  if (!peer.destroyed && !peer.write(chunk)) this.pause()
}

function onDrain(this: ConnSocket): void {
  const peer = peerOf(this)
  if (!peer.destroyed) peer.resume()
}

function onEnd(this: ConnSocket): void {
  const peer = peerOf(this)
  if (!peer.destroyed) peer.end()
}

/** An upstream that closes without having sent its FIN vanished: the client is torn down. */
function onUpstreamClose(this: ConnSocket): void {
  const conn = this[CONN]!
  if (conn.upstream !== this || !conn.connected) return
  if (!conn.client.writableEnded) conn.client.destroy()
  const m = conn.runtime.metrics
  m.bytesUpstream.inc(this.bytesWritten)
  m.bytesDownstream.inc(this.bytesRead)
}

function onClientError(this: ConnSocket): void {
  const conn = this[CONN]!
  if (conn.connected) conn.upstream!.resetAndDestroy()
}

/** A client that closes without having sent its FIN vanished: the upstream is torn down. */
function onClientClose(this: ConnSocket): void {
  const conn = this[CONN]!
  conn.listener.release(this, conn.runtime)
  const upstream = conn.upstream
  if (conn.connected && upstream && !upstream.writableEnded) upstream.destroy()
}
