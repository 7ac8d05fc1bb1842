// A TCP listener on one (address, port) of a Service port. Open only while its list has endpoints (closed, the kernel
// refuses at once, as kube-proxy's REJECT does); closing stops new connections and leaves established ones running.
// Each connection: pick (affinity, round robin), dial with the userspace kube-proxy's retry schedule, then pipe both
// ways with backpressure and half-close (specs/l4-health.md §3.5).

import { connect, createServer, type Server, type Socket } from 'node:net'
import type { EndpointState, UpstreamReporter } from '../model/snapshot.ts'
import type { LbMetrics } from './lb-metrics.ts'
import type { ListenerKind, PortRuntime } from './port-runtime.ts'
import { proxyHeader } from './proxy-protocol.ts'

/** Connect timeouts of successive attempts, each to the next endpoint in rotation. */
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
  protected wanted = false
  protected readonly deps: ListenerDeps

  constructor(protocol: 'TCP' | 'UDP', address: string, port: number, kind: ListenerKind, runtime: PortRuntime, deps: ListenerDeps) {
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

  protected setState(state: ListenerState, error: string | null = null): void {
    this.state = state
    this.error = error
    this.deps.onState(this)
    if (state === 'open' && !this.wanted) this.doClose()
    else if ((state === 'closed') && this.wanted) this.startOpen()
  }

  protected abstract startOpen(): void
  protected abstract doClose(): void
  /** Closes the listener and, for UDP, its flows; TCP connections are left to finish until `deadline`. */
  abstract shutdown(deadline: number): Promise<void>
}

export class TcpListener extends BaseListener {
  #server: Server | null = null
  readonly #conns = new Set<Socket>()

  constructor(address: string, port: number, kind: ListenerKind, runtime: PortRuntime, deps: ListenerDeps) {
    super('TCP', address, port, kind, runtime, deps)
  }

  protected startOpen(): void {
    this.state = 'opening'
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (s) => this.#accept(s))
    this.#server = server
    server.once('error', (err: NodeJS.ErrnoException) => {
      this.#server = null
      this.setState('error', `${err.code ?? 'error'}: cannot listen on ${this.address}:${this.port} (${err.message})`)
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

  #accept(client: Socket): void {
    const rt = this.runtime
    const service = rt.svc.key
    const m = this.deps.metrics
    m.connections.inc({ service, protocol: 'TCP' })
    m.active.inc({ service, protocol: 'TCP' })
    this.#conns.add(client)
    const clientIp = client.remoteAddress ?? ''
    const done = () => {
      if (this.#conns.delete(client)) m.active.dec({ service, protocol: 'TCP' })
    }
    client.on('close', done)
    client.on('error', () => {})
    const first = rt.pick(this.kind, clientIp, Date.now())
    if (!first) {
      m.refused.inc({ service })
      client.resetAndDestroy()
      return
    }
    this.#dial(client, first, 0)
  }

  #dial(client: Socket, ep: EndpointState, attempt: number): void {
    const rt = this.runtime
    const service = rt.svc.key
    const upstream = connect({ host: ep.ip, port: ep.port, allowHalfOpen: true, noDelay: true })
    const timer = setTimeout(() => upstream.destroy(new Error('connect timeout')), DIAL_TIMEOUTS_MS[attempt])
    const onFail = () => {
      clearTimeout(timer)
      this.deps.reporter.report(service, ep.ip, ep.port, false)
      this.deps.metrics.connectFailures.inc({ service })
      if (client.destroyed) return
      const next = attempt + 1 < DIAL_TIMEOUTS_MS.length ? rt.retry(this.kind, client.remoteAddress ?? '', Date.now()) : null
      if (next) this.#dial(client, next, attempt + 1)
      else {
        this.deps.metrics.refused.inc({ service })
        client.resetAndDestroy()
      }
    }
    upstream.once('error', onFail)
    upstream.once('connect', () => {
      clearTimeout(timer)
      upstream.off('error', onFail)
      this.deps.reporter.report(service, ep.ip, ep.port, true)
      if (client.destroyed) {
        upstream.destroy()
        return
      }
      if (rt.proxyProtocol) {
        upstream.write(proxyHeader(rt.proxyProtocol, 'TCP', client.remoteAddress ?? '', client.remotePort ?? 0, client.localAddress ?? '', client.localPort ?? 0))
      }
      this.#splice(client, upstream)
    })
  }

  #splice(client: Socket, upstream: Socket): void {
    const service = this.runtime.svc.key
    const m = this.deps.metrics
    // A reset on one side is passed on as a reset; a FIN is passed on as a FIN (pipe ends the other side's writable
    // half while allowHalfOpen keeps its readable half working).
    client.on('error', () => upstream.resetAndDestroy())
    upstream.on('error', () => client.resetAndDestroy())
    // A side that closes without having sent its FIN vanished: the other side is torn down. After a FIN, pipe has
    // already ended the other side's writable half and it closes by itself once its own traffic is done.
    client.on('close', () => {
      if (!upstream.writableEnded) upstream.destroy()
    })
    upstream.on('close', () => {
      if (!client.writableEnded) client.destroy()
      m.bytes.inc({ service, direction: 'upstream' }, upstream.bytesWritten)
      m.bytes.inc({ service, direction: 'downstream' }, upstream.bytesRead)
    })
    client.pipe(upstream)
    upstream.pipe(client)
    client.resume()
  }

  async shutdown(deadline: number): Promise<void> {
    this.want(false)
    while (this.#conns.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
    for (const c of this.#conns) c.destroy()
  }

  get connections(): number {
    return this.#conns.size
  }
}
