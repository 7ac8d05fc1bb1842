// The L7 Ingress router plane: HTTP and HTTPS listeners, a route table compiled from each Snapshot and swapped as one
// reference, connection pools per endpoint kept across Snapshots. See proxy/README.md and specs/ingress.md §1.
//
// Two engines share the request logic of forward/: the http listener runs the raw HTTP/1.1 engine (h1/: net
// sockets and Node's llhttp binding, for throughput); the https listener is a node:http2 secure server that speaks
// HTTP/2 or HTTP/1.1 by ALPN and forwards through undici. Where the raw engine cannot load (a Node without the
// `_http_common` module), the http listener uses node:http and undici too.

import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server as HttpServer,
  type ServerResponse,
} from 'node:http'
import {
  createSecureServer,
  type Http2SecureServer,
  type Http2ServerRequest,
  type Http2ServerResponse,
  type ServerHttp2Session,
} from 'node:http2'
import type { Server, Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import { createSecureContext, type SecureContext } from 'node:tls'
import { setTimeout as sleep } from 'node:timers/promises'
import { publishApplied, publishListener } from '../model/diagnostics.ts'
import type { Plane, PlaneContext, PlaneFactory } from '../model/plane.ts'
import type { Snapshot } from '../model/snapshot.ts'
import type { ListenAddress } from '../model/options.ts'
import { ProxyError } from './errors.ts'
import { Forwarder, type ListenerInfo, type RequestHead } from './forward/forwarder.ts'
import { handle } from './forward/node-exchange.ts'
import { unroutedCode, writeRawStatus } from './http/status.ts'
import { H1Engine, rawEngineAvailable } from './h1/engine.ts'
import { ProxyMetrics } from './metrics.ts'
import { DEFAULT_PATH_OPTIONS, type PathOptions } from './http/normalize.ts'
import { compile, describeRoutes, routeStats, type CompileResult } from './routes/compile.ts'
import type { IngressState } from './routes/route-table.ts'
import { generateSelfSigned, pickContext, SecureContextCache, type PemPair } from './tls.ts'
import { EndpointRegistry } from './upstream.ts'
import { defaultMaxConnections, readFileLimit } from './limits.ts'
import { handleUpgrade, isWebSocketUpgrade } from './websocket.ts'
import { startProxyWorkers } from './workers.ts'

/** Client keep-alive idle time (ingress-nginx `keep-alive: 75`). */
const CLIENT_KEEPALIVE_MS = 75_000
/** Time allowed to send the request head (ingress-nginx `client-header-timeout: 60`). */
const CLIENT_HEADER_TIMEOUT_MS = 60_000

interface ListenerState {
  readonly name: 'http' | 'https'
  readonly requested: ListenAddress
  state: 'starting' | 'listening' | 'failed' | 'closed'
  address: string | null
  port: number | null
  error: string | null
}

/** A listening server and how to drain it. */
interface Listener {
  readonly server: Server
  /** Stop accepting (resolves when every connection is gone). */
  stop(): Promise<void>
  /** Close connections with nothing in flight (repeated while draining). */
  closeIdle(): void
  /** Close everything now. */
  closeAll(): void
  /** Connection counts for /status. */
  connections(): { open: number; closedForRoom: number; refused: number } | null
}

export interface ProxyExtraOptions {
  /** The http listener's engine: `raw` (default where it loads) or `node` (node:http + undici, as on https). */
  readonly engine?: 'raw' | 'node'
  /** Path normalisation options (spec P4, P6); defaults: merge slashes, keep escaped slashes. */
  readonly pathOptions?: PathOptions
  /** A default certificate instead of generating one (tests). */
  readonly defaultCertificate?: PemPair
  /** --workers hook (issue 16): listen with SO_REUSEPORT, so N worker threads share the ports (proxy/workers.ts). */
  readonly reusePort?: boolean
}

export class ProxyPlane implements Plane {
  readonly name = 'proxy'
  readonly #ctx: PlaneContext
  readonly #fwd: Forwarder
  readonly #endpoints = new EndpointRegistry()
  readonly #contexts = new SecureContextCache()
  readonly #metrics: ProxyMetrics
  readonly #pathOptions: PathOptions
  readonly #extra: ProxyExtraOptions
  #servers: Listener[] = []
  #listeners: ListenerState[] = []
  #defaultContext: SecureContext | null = null
  #result: CompileResult | null = null
  /** Services some backend of the current table names (present or not). */
  #usedServices = new Set<string>()
  #version = 0
  #unsubscribe: (() => void) | null = null
  #closing = false
  /** Client connections per listener (--max-connections, else derived from RLIMIT_NOFILE). */
  readonly #maxConnections: number

  constructor(ctx: PlaneContext, extra: ProxyExtraOptions = {}) {
    this.#ctx = ctx
    const nofile = readFileLimit()
    this.#maxConnections = ctx.options.maxConnections ?? defaultMaxConnections(nofile?.soft ?? null)
    ctx.log.info({ maxConnections: this.#maxConnections, nofile }, 'client connection limit per listener')
    if (nofile !== null && nofile.soft < nofile.hard)
      // Node raises the soft limit to the hard one at start; if it could not, there is no public API to retry.
      ctx.log.warn({ nofile }, 'RLIMIT_NOFILE soft limit is below the hard limit')
    this.#extra = extra
    this.#pathOptions = extra.pathOptions ?? DEFAULT_PATH_OPTIONS
    this.#metrics = new ProxyMetrics(ctx.metrics)
    this.#fwd = new Forwarder({
      log: ctx.log,
      accessLog: ctx.options.accessLog,
      trustForwardedFrom: ctx.options.trustForwardedFrom,
      reporter: ctx.reporter,
      metrics: this.#metrics,
      pathOptions: this.#pathOptions,
    })
  }

  async start(): Promise<void> {
    const { options } = this.#ctx
    if (options.https) {
      const pem = this.#extra.defaultCertificate ?? (await generateSelfSigned())
      this.#defaultContext = createSecureContext({ cert: pem.cert, key: pem.key, minVersion: 'TLSv1.2' })
      await this.#listen('https', options.https, pem)
      this.#fwd.httpsPort = this.#listeners.find((l) => l.name === 'https')?.port ?? null
    }
    if (options.http) await this.#listen('http', options.http, null)
    this.#unsubscribe = this.#ctx.store.subscribe((s) => {
      const started = performance.now()
      this.apply(s)
      publishApplied('proxy', s.version, started)
    })
  }

  async #listen(name: 'http' | 'https', addr: ListenAddress, pem: PemPair | null): Promise<void> {
    const st: ListenerState = { name, requested: addr, state: 'starting', address: null, port: null, error: null }
    this.#listeners.push(st)
    const li: ListenerInfo = { name, scheme: name, port: '' }
    const listener =
      pem !== null
        ? this.#https(li, pem)
        : rawEngineAvailable && this.#extra.engine !== 'node'
          ? this.#raw(li)
          : this.#node(li)
    const server = listener.server
    this.#servers.push(listener)
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen({ host: addr.host, port: addr.port, reusePort: this.#extra.reusePort === true }, () => {
          server.off('error', reject)
          resolve()
        })
      })
    } catch (err) {
      st.state = 'failed'
      st.error = (err as Error).message
      publishListener('proxy', name, addr.host, addr.port, err as Error)
      throw new ProxyError(
        'MLT_PROXY_LISTEN',
        `${name} listener on ${addr.host}:${addr.port}: ${(err as Error).message}`,
        { cause: err },
      )
    }
    server.on('error', (err) => this.#ctx.log.error({ err, listener: name }, 'listener error'))
    const a = server.address()
    if (a && typeof a === 'object') {
      st.address = a.address
      st.port = a.port
      li.port = String(a.port)
    }
    st.state = 'listening'
    this.#ctx.log.info({ listener: name, address: st.address, port: st.port }, 'listening')
    publishListener('proxy', name, st.address ?? addr.host, st.port ?? addr.port, null)
  }

  /** The http listener on the raw HTTP/1.1 engine. */
  #raw(li: ListenerInfo): Listener {
    const engine = new H1Engine(this.#fwd, li, this.#maxConnections)
    return {
      server: engine.server,
      stop: () => engine.stopAccepting(),
      closeIdle: () => engine.closeIdle(),
      closeAll: () => engine.closeAll(),
      connections: () => ({
        open: engine.connections,
        closedForRoom: engine.closedForRoom,
        refused: engine.refused,
      }),
    }
  }

  /** The http listener on node:http + undici (where the raw engine is unavailable, or asked for). */
  #node(li: ListenerInfo): Listener {
    const fwd = this.#fwd
    const server = createHttpServer((req: IncomingMessage, res: ServerResponse) => handle(fwd, req, res, li))
    server.keepAliveTimeout = CLIENT_KEEPALIVE_MS
    server.headersTimeout = CLIENT_HEADER_TIMEOUT_MS
    // Long uploads and downloads are bounded by the per-route read timeouts, not by a whole-request limit.
    server.requestTimeout = 0
    // node:http refuses connections beyond the cap; idle keep-alive ones are closed when that happens.
    server.maxConnections = this.#maxConnections
    server.on('drop', () => server.closeIdleConnections())
    this.#h1Events(server, li)
    return {
      server,
      stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
      closeIdle: () => server.closeIdleConnections(),
      closeAll: () => server.closeAllConnections(),
      connections: () => null,
    }
  }

  /** WebSocket upgrades and CONNECT on a node:http (or HTTP/1.1-over-http2) server. */
  #h1Events(server: HttpServer | Http2SecureServer, li: ListenerInfo): void {
    const fwd = this.#fwd
    // Only websocket is switched to: any other Upgrade (h2c, …) is an ordinary request, handled as HTTP.
    ;(server as unknown as { shouldUpgradeCallback: (req: IncomingMessage) => boolean }).shouldUpgradeCallback = (
      req: IncomingMessage,
    ) => isWebSocketUpgrade(req.rawHeaders)
    server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) =>
      handleUpgrade(fwd, req as RequestHead, socket.remoteAddress ?? '', socket, head, li),
    )
    // CONNECT is refused (spec §1.4), answered on the connect event, then the connection is closed.
    server.on('connect', (_req: IncomingMessage, socket: Socket) => {
      socket.on('error', () => socket.destroy())
      writeRawStatus(socket, 405)
    })
  }

  /**
   * The https listener: TLS with SNI, then HTTP/2 or HTTP/1.1 by ALPN (node:http2 with allowHTTP1). Both go through
   * the same Forwarder; WebSocket upgrades arrive on the HTTP/1.1 side (RFC 8441 WebSocket over HTTP/2 is not
   * offered: node:http2 does not advertise SETTINGS_ENABLE_CONNECT_PROTOCOL by default).
   */
  #https(li: ListenerInfo, pem: PemPair): Listener {
    const fwd = this.#fwd
    const server = createSecureServer(
      {
        cert: pem.cert,
        key: pem.key,
        minVersion: 'TLSv1.2',
        allowHTTP1: true,
        SNICallback: (servername, cb) => cb(null, pickContext(fwd.table.tls, servername) ?? this.#defaultContext!),
      },
      (req: Http2ServerRequest | IncomingMessage, res: Http2ServerResponse | ServerResponse) =>
        handle(fwd, req, res, li),
    )
    // The HTTP/1.1 side honours node:http's server timeouts.
    const h1 = server as unknown as HttpServer
    h1.keepAliveTimeout = CLIENT_KEEPALIVE_MS
    h1.headersTimeout = CLIENT_HEADER_TIMEOUT_MS
    h1.requestTimeout = 0
    // Beyond the cap new connections are refused (idle-first closing is the raw engine's only).
    server.maxConnections = this.#maxConnections
    this.#h1Events(server, li)
    const sockets = new Set<TLSSocket>()
    const sessions = new Set<ServerHttp2Session>()
    server.on('secureConnection', (s: TLSSocket) => {
      sockets.add(s)
      s.once('close', () => sockets.delete(s))
    })
    server.on('session', (s: ServerHttp2Session) => {
      sessions.add(s)
      s.once('close', () => sessions.delete(s))
      s.on('error', () => s.destroy())
    })
    return {
      server,
      stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
      // An HTTP/2 session closes gracefully: GOAWAY, its open streams finish.
      closeIdle: () => {
        for (const s of sessions) if (!s.closed) s.close()
      },
      closeAll: () => {
        for (const s of sessions) s.destroy()
        for (const s of sockets) s.destroy()
      },
      connections: () => null,
    }
  }

  /**
   * Whether `snapshot` leaves the route table as it is: nothing changed since the Snapshot applied last but Services
   * no route uses and Pods (issue 14: a probe flip behind no Ingress costs no compile).
   */
  #unchangedFor(snapshot: Snapshot): boolean {
    const ch = snapshot.changes
    const r = this.#result
    if (!ch || r === null || snapshot.version !== this.#version + 1 || ch.other || ch.ingresses.size > 0) return false
    for (const key of ch.services) if (this.#usedServices.has(key)) return false
    return true
  }

  /** Compiles the Snapshot into a new route table and swaps it in; retires endpoints no table uses. */
  apply(snapshot: Snapshot): void {
    if (this.#closing) return
    if (this.#unchangedFor(snapshot)) {
      this.#version = snapshot.version
      return
    }
    const result = compile({
      snapshot,
      ingressClass: this.#ctx.options.ingressClass,
      pathOptions: this.#pathOptions,
      endpoints: this.#endpoints,
      metrics: this.#metrics,
      contexts: this.#contexts,
      // The last good version of each Ingress is kept here, between compiles, as the previous result's.
      lastGood: this.#result?.lastGood ?? new Map(),
      previous: this.#result,
    })
    this.#usedServices = new Set([...result.backends.values()].map((b) => b.backend.service))
    this.#fwd.table = result.table
    this.#endpoints.sweep(result.live)
    this.#contexts.sweep(result.secrets)
    this.#metrics.retain(routeStats(result))
    const before = new Map<string, IngressState>((this.#result?.ingresses ?? []).map((i) => [i.ingress, i.state]))
    for (const i of result.ingresses) {
      if (before.get(i.ingress) === i.state) continue
      if (i.state === 'accepted')
        this.#ctx.log.info(
          { ingress: i.ingress, warnings: i.warnings.length ? i.warnings : undefined },
          'ingress accepted',
        )
      else
        this.#ctx.log.warn(
          {
            ingress: i.ingress,
            state: i.state,
            code: i.code,
            reasons: i.reasons,
            servingLastGood: i.servingLastGood,
          },
          `ingress ${i.state}`,
        )
    }
    if (this.#result === null) for (const n of result.notes) this.#ctx.log.info(n)
    this.#result = result
    this.#version = snapshot.version
  }

  ready(): boolean {
    return this.#result !== null && this.#listeners.every((l) => l.state === 'listening')
  }

  status(): unknown {
    const r = this.#result
    return {
      snapshot: this.#version,
      listeners: Object.fromEntries(
        this.#listeners.map((l, i) => [
          l.name,
          {
            state: l.state,
            address: l.address,
            port: l.port,
            error: l.error,
            maxConnections: this.#maxConnections,
            connections: this.#servers[i]?.connections() ?? null,
          },
        ]),
      ),
      ingresses: r?.ingresses ?? [],
      routes: r !== null ? describeRoutes(r.table) : [],
      // Requests answered before a route was chosen (404 no route, 405, 400...), counted by catalogue code.
      unrouted: this.#unrouted(),
      defaultBackend: r?.table.defaultRoute
        ? { ingress: r.table.defaultRoute.ingress, service: r.table.defaultRoute.backend.label }
        : null,
      conflicts: r?.conflicts ?? [],
      tls: {
        hosts: r?.table.tls.hosts ?? {},
        defaultCertificate: r?.table.tls.fallback
          ? 'from an Ingress tls entry without hosts'
          : 'self-signed (generated at start)',
      },
      notes: r?.notes ?? [],
      endpoints: this.#endpoints.size,
      inflight: this.#fwd.inflight,
      tunnels: this.#fwd.tunnels.size,
    }
  }

  #unrouted(): Record<string, number> {
    const out: Record<string, number> = {}
    for (const [status, n] of this.#fwd.metrics.unrouted) {
      const code = unroutedCode(status)
      out[code] = (out[code] ?? 0) + n
    }
    return out
  }

  /** Stop accepting; let in-flight requests and tunnels finish until `deadline`; then close everything. */
  async close(deadline: number): Promise<void> {
    this.#closing = true
    this.#unsubscribe?.()
    const closed = this.#servers.map((s) => s.stop())
    for (const s of this.#servers) s.closeIdle()
    while ((this.#fwd.inflight > 0 || this.#fwd.tunnels.size > 0) && Date.now() < deadline) {
      await sleep(20)
      for (const s of this.#servers) s.closeIdle()
    }
    for (const s of this.#servers) s.closeAll()
    for (const t of this.#fwd.tunnels) t.destroy()
    this.#fwd.tunnels.clear()
    await Promise.all(closed)
    for (const l of this.#listeners) l.state = 'closed'
    await this.#endpoints.closeAll(Math.max(deadline, Date.now() + 100))
  }
}

export const startProxy: PlaneFactory = async (ctx) => {
  // --workers hook (issue 16): N ≥ 2 runs the listeners in worker threads; 1 is the in-thread path below.
  if (ctx.options.proxyWorkers >= 2) return startProxyWorkers(ctx)
  const plane = new ProxyPlane(ctx)
  try {
    await plane.start()
  } catch (err) {
    await plane.close(Date.now())
    throw err
  }
  return plane
}

/** For tests: a plane with extra options (path options, a given default certificate). */
export async function startProxyWith(ctx: PlaneContext, extra: ProxyExtraOptions): Promise<ProxyPlane> {
  const plane = new ProxyPlane(ctx, extra)
  await plane.start()
  return plane
}
