// A UDP listener on one (address, port) of a Service port, with a userspace conntrack (specs/l4-health.md §3.6):
// a flow per (client ip, client port) gets an endpoint on its first datagram and one connected upstream socket;
// replies go back from the listener's address. Idle flows expire after 30 s, or 120 s once the endpoint replied.

import { createSocket, type Socket as UdpSocket, type RemoteInfo } from 'node:dgram'
import { isIPv6 } from 'node:net'
import type { EndpointState } from '../model/snapshot.ts'
import { BaseListener, type ListenerDeps } from './tcp-listener.ts'
import type { ListenerKind, PortRuntime } from './port-runtime.ts'
import { proxyHeader } from './proxy-protocol.ts'

/** Flows per listener; past it the least recently active flow is evicted. */
export const MAX_FLOWS = 16384

interface Flow {
  readonly key: string
  readonly client: RemoteInfo
  readonly endpoint: EndpointState
  /** The Service port the flow was counted on (a listener's runtime can change under it). */
  readonly runtime: PortRuntime
  readonly upstream: UdpSocket
  lastActivity: number
  replied: boolean
  connected: boolean
  pending: Buffer[] | null
  /** PROXY protocol v2 header prepended to every datagram of the flow (built once), or null. */
  readonly header: Buffer | null
}

export class UdpListener extends BaseListener {
  #socket: UdpSocket | null = null
  readonly #flows = new Map<string, Flow>()

  constructor(address: string, port: number, kind: ListenerKind, runtime: PortRuntime, deps: ListenerDeps) {
    super('UDP', address, port, kind, runtime, deps)
  }

  protected startOpen(): void {
    this.state = 'opening'
    const sock = createSocket({ type: isIPv6(this.address) ? 'udp6' : 'udp4', recvBufferSize: 1 << 20 })
    this.#socket = sock
    sock.once('error', (err: NodeJS.ErrnoException) => {
      this.#socket = null
      sock.close()
      this.setState(
        'error',
        `${err.code ?? 'error'}: cannot listen on ${this.address}:${this.port} (${err.message})`,
        'MLT_LB_BIND',
      )
    })
    sock.on('message', (msg, rinfo) => this.#onDatagram(msg, rinfo))
    sock.bind({ address: this.address, port: this.port, exclusive: true }, () => {
      sock.removeAllListeners('error')
      sock.on('error', () => {})
      this.setState('open')
    })
  }

  protected doClose(): void {
    const sock = this.#socket
    this.#socket = null
    sock?.close()
    // Without a listener the replies of live flows have nowhere to go: the flows end with it.
    for (const f of [...this.#flows.values()]) this.#dropFlow(f)
    this.setState('closed')
  }

  #onDatagram(msg: Buffer, rinfo: RemoteInfo): void {
    const key = `${rinfo.address}|${rinfo.port}`
    const now = Date.now()
    let flow = this.#flows.get(key)
    if (!flow) {
      const created = this.#newFlow(key, rinfo, now)
      if (!created) return
      flow = created
    }
    flow.lastActivity = now
    flow.runtime.metrics.bytesUpstream.inc(msg.length)
    if (!flow.connected) flow.pending!.push(msg)
    else if (flow.header) flow.upstream.send([flow.header, msg])
    else flow.upstream.send(msg)
  }

  #newFlow(key: string, rinfo: RemoteInfo, now: number): Flow | null {
    const rt = this.runtime
    const ep = rt.pick(this.kind, rinfo.address, now)
    if (!ep) return null
    if (this.#flows.size >= MAX_FLOWS) this.#evictOldest()
    const upstream = createSocket({ type: isIPv6(ep.ip) ? 'udp6' : 'udp4', recvBufferSize: 1 << 20 })
    const header =
      rt.proxyProtocol === 'v2' ? proxyHeader('v2', 'UDP', rinfo.address, rinfo.port, this.address, this.port) : null
    const flow: Flow = {
      key,
      client: rinfo,
      endpoint: ep,
      runtime: rt,
      upstream,
      lastActivity: now,
      replied: false,
      connected: false,
      pending: [],
      header,
    }
    this.#flows.set(key, flow)
    const service = rt.svc.key
    const m = rt.metrics
    m.udpFlows.inc()
    m.udpActive.inc()
    upstream.on('message', (reply) => {
      flow.replied = true
      flow.lastActivity = Date.now()
      m.bytesDownstream.inc(reply.length)
      this.#socket?.send(reply, rinfo.port, rinfo.address)
    })
    // An ICMP error from the endpoint (port unreachable) ends the flow; the client's next datagram picks again.
    upstream.on('error', () => {
      this.deps.reporter.report(service, ep.ip, ep.port, false)
      this.#dropFlow(flow)
    })
    upstream.connect(ep.port, ep.ip, () => {
      flow.connected = true
      const queued = flow.pending!
      flow.pending = null
      for (const m of queued) upstream.send(header ? [header, m] : m)
    })
    return flow
  }

  #evictOldest(): void {
    let oldest: Flow | null = null
    for (const f of this.#flows.values()) if (!oldest || f.lastActivity < oldest.lastActivity) oldest = f
    if (oldest) this.#dropFlow(oldest)
  }

  #dropFlow(flow: Flow): void {
    if (!this.#flows.delete(flow.key)) return
    flow.runtime.metrics.udpActive.dec()
    try {
      flow.upstream.close()
    } catch {
      // already closed
    }
  }

  /** Expires idle flows; called by the plane's sweep timer. */
  sweep(now: number): void {
    const rt = this.runtime
    for (const f of [...this.#flows.values()]) {
      const idle = now - f.lastActivity
      if (idle >= (f.replied ? rt.udpStreamTimeoutMs : rt.udpTimeoutMs)) this.#dropFlow(f)
    }
  }

  /** Removes flows whose endpoint is no longer serving (kube-proxy's conntrack cleanup); keeps terminating+serving. */
  retainServing(serving: ReadonlySet<string>): void {
    for (const f of [...this.#flows.values()])
      if (!serving.has(`${f.endpoint.ip}|${f.endpoint.port}`)) this.#dropFlow(f)
  }

  get flows(): number {
    return this.#flows.size
  }

  async shutdown(): Promise<void> {
    this.want(false)
    for (const f of [...this.#flows.values()]) this.#dropFlow(f)
  }
}
