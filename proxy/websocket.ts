// Upgraded connections (WebSocket, spec §1.8.4): the request is routed like any other, then meshlet opens a TCP
// connection to the chosen endpoint, writes the request head itself (with Upgrade/Connection kept and the usual
// X-Forwarded-* headers) and splices the two sockets. The upstream's 101 (or its refusal) flows back untouched.
// Idle limit: proxy-read-timeout when annotated, else one hour, so idle WebSockets are not cut at 60 s.

import { connect, type Socket } from 'node:net'
import { ExchangeBase, type Forwarder, type ListenerInfo, type RequestHead } from './forward.ts'
import type { Endpoint } from './upstream.ts'

const STATUS_LINE: Record<number, string> = {
  308: 'Permanent Redirect',
  400: 'Bad Request',
  404: 'Not Found',
  405: 'Method Not Allowed',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
}

/** A raw HTTP/1.1 answer on a socket that is not (or no longer) an http.ServerResponse. */
export function writeRawStatus(socket: Socket, status: number, extra = ''): void {
  if (socket.destroyed) return
  const body = `${status} ${STATUS_LINE[status] ?? ''}\n`
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_LINE[status] ?? ''}\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\n${extra}\r\n${body}`,
  )
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
  // The affinity cookie is honoured but not set on a 101 (the tunnel's response head is the endpoint's, untouched).
  const ep = ex.firstEndpoint()
  if (ep === null) {
    writeRawStatus(socket, 503)
    ex.finish(503)
    return
  }
  new Tunnel(fwd, ex, socket, head).connect(ep)
}

class Tunnel {
  readonly fwd: Forwarder
  readonly ex: ExchangeBase
  readonly client: Socket
  readonly head: Buffer
  upstream: Socket | null = null

  constructor(fwd: Forwarder, ex: ExchangeBase, client: Socket, head: Buffer) {
    this.fwd = fwd
    this.ex = ex
    this.client = client
    this.head = head
  }

  connect(ep: Endpoint): void {
    const ex = this.ex
    ex.tries++
    ex.upstream = ep
    const up = connect({ host: ep.host, port: ep.port, noDelay: true, timeout: ex.route.config.connectTimeoutMs })
    this.upstream = up
    let connected = false
    up.once('timeout', () => {
      if (!connected) up.destroy(Object.assign(new Error('connect timeout'), { code: 'UND_ERR_CONNECT_TIMEOUT' }))
    })
    up.once('connect', () => {
      connected = true
      this.fwd.reporter.report(ex.route.backend.service, ep.host, ep.port, true)
      this.#splice(up)
    })
    up.once('error', (err: Error & { code?: string }) => {
      if (connected) {
        this.client.destroy()
        return
      }
      this.fwd.reporter.report(ex.route.backend.service, ep.host, ep.port, false)
      ex.route.stats.connectErrors++
      if (ex.tries < ex.route.config.tries && !this.client.destroyed) {
        const next = ex.nextEndpoint(ep)
        if (next !== null) {
          this.connect(next)
          return
        }
      }
      const status = err.code === 'UND_ERR_CONNECT_TIMEOUT' ? 504 : 502
      writeRawStatus(this.client, status)
      ex.finish(status)
    })
  }

  #splice(up: Socket): void {
    const ex = this.ex
    const client = this.client
    const h = ex.headers
    let head = `${ex.method} ${ex.upstreamPath()} HTTP/1.1\r\n`
    for (let i = 0; i < h.length; i += 2) head += `${h[i]}: ${h[i + 1]}\r\n`
    up.write(head + '\r\n')
    if (this.head.length > 0) up.write(this.head)
    const idle = ex.route.config.tunnelIdleMs
    up.setTimeout(idle)
    client.setTimeout(idle)
    const fwd = this.fwd
    fwd.tunnels.add(client)
    ex.status = 101
    const end = () => {
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
  }
}
