// Shared pieces of the lb tests: loopback address blocks per test file, small real backends (TCP identify/echo, UDP
// echo), clients bound to a chosen source address, and manifest builders. Nothing here fakes meshlet's own code.

import { createServer, connect, type Server, type Socket } from 'node:net'
import { createSocket, type Socket as UdpSocket } from 'node:dgram'
import { setTimeout as sleep } from 'node:timers/promises'
import type { MeshletProcess } from '../helpers/meshlet.ts'
import {
  serviceOf,
  type LbListenerJson,
  type LbPortJson,
  type ServiceJson,
  type StatusJson,
} from '../helpers/status.ts'

interface Teardown {
  teardown(fn: () => unknown): void
}

/**
 * A /24 of 127/8 private to one lb test file in this run: `127.<90+file>.<pid%250>.0/24`. Layout inside it:
 * .0/25 service CIDR, .128/29 and .136-.137 LB pools, .200-.239 backends, .240-.249 node addresses.
 */
export function netOf(file: number): { prefix: string; serviceCidr: string; ip: (last: number) => string } {
  const prefix = `127.${90 + file}.${process.pid % 250}`
  return { prefix, serviceCidr: `${prefix}.0/25`, ip: (last) => `${prefix}.${last}` }
}

/** A backend that writes its identity `ip:port\n` on accept, then echoes everything; FIN is echoed as FIN. */
export async function identifyServer(
  t: Teardown,
  host: string,
  port = 0,
): Promise<{ server: Server; port: number; id: string; accepted: () => number }> {
  let accepted = 0
  const sockets = new Set<Socket>()
  const server = createServer({ allowHalfOpen: true }, (s) => {
    accepted++
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
    s.on('error', () => {})
    s.write(`${host}:${(server.address() as { port: number }).port}\n`)
    s.pipe(s)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen({ host, port }, () => resolve())
  })
  const p = (server.address() as { port: number }).port
  t.teardown(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy()
        server.close(() => r())
      }),
  )
  return { server, port: p, id: `${host}:${p}`, accepted: () => accepted }
}

/** A UDP backend answering each datagram with `ip:port|<payload>`, except payloads starting with "silent". */
export async function udpEchoServer(
  t: Teardown,
  host: string,
  port = 0,
): Promise<{ socket: UdpSocket; port: number; id: string; peers: Set<string> }> {
  const socket = createSocket('udp4')
  const peers = new Set<string>()
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject)
    socket.bind({ address: host, port }, () => resolve())
  })
  const p = socket.address().port
  socket.on('message', (msg, r) => {
    peers.add(`${r.address}:${r.port}`)
    if (msg.toString('latin1').startsWith('silent')) return
    socket.send(Buffer.concat([Buffer.from(`${host}:${p}|`), msg]), r.port, r.address)
  })
  t.teardown(() => new Promise<void>((r) => socket.close(() => r())))
  return { socket, port: p, id: `${host}:${p}`, peers }
}

export interface ConnectResult {
  readonly socket: Socket
  /** First line the backend sent: its identity. */
  readonly id: string
}

/** Connects (optionally from `localAddress`) and reads the backend's identity line. */
export function connectAndIdentify(
  host: string,
  port: number,
  localAddress?: string,
  timeoutMs = 5000,
): Promise<ConnectResult> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, ...(localAddress ? { localAddress } : {}), allowHalfOpen: true })
    let buf = ''
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error(`no identity from ${host}:${port} in ${timeoutMs} ms`))
    }, timeoutMs)
    const onData = (c: Buffer) => {
      buf += c.toString('latin1')
      const i = buf.indexOf('\n')
      if (i >= 0) {
        clearTimeout(timer)
        socket.off('data', onData)
        socket.pause()
        resolve({ socket, id: buf.slice(0, i) })
      }
    }
    socket.on('data', onData)
    socket.once('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
  })
}

/** One short connection: identity, then closed. */
export async function identify(host: string, port: number, localAddress?: string): Promise<string> {
  const { socket, id } = await connectAndIdentify(host, port, localAddress)
  socket.destroy()
  return id
}

/** Resolves with the error code of a TCP connect that must fail, and how long it took (ms). */
export function connectError(host: string, port: number, timeoutMs = 3000): Promise<{ code: string; ms: number }> {
  const start = performance.now()
  return new Promise((resolve) => {
    const s = connect({ host, port })
    const timer = setTimeout(() => {
      s.destroy()
      resolve({ code: 'TIMEOUT', ms: performance.now() - start })
    }, timeoutMs)
    s.once('connect', () => {
      // Accepted: wait for what the proxy does with it (reset, or data).
      s.once('data', () => {
        clearTimeout(timer)
        s.destroy()
        resolve({ code: 'CONNECTED', ms: performance.now() - start })
      })
    })
    s.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer)
      resolve({ code: err.code ?? 'error', ms: performance.now() - start })
    })
    s.once('close', () => {
      clearTimeout(timer)
      resolve({ code: 'CLOSED', ms: performance.now() - start })
    })
  })
}

/** Sends one datagram on a connected UDP socket; resolves with the reply text or the error code. */
export function udpExchange(
  host: string,
  port: number,
  payload: string,
  opts: { socket?: UdpSocket; timeoutMs?: number } = {},
): Promise<{ reply: string | null; code: string | null; ms: number }> {
  const start = performance.now()
  return new Promise((resolve) => {
    const own = !opts.socket
    const s = opts.socket ?? createSocket('udp4')
    let done = false
    const finish = (reply: string | null, code: string | null) => {
      if (done) return
      done = true
      clearTimeout(timer)
      s.off('message', onMessage)
      s.off('error', onError)
      if (own) s.close()
      resolve({ reply, code, ms: performance.now() - start })
    }
    const onMessage = (m: Buffer) => finish(m.toString(), null)
    const onError = (err: NodeJS.ErrnoException) => finish(null, err.code ?? 'error')
    const timer = setTimeout(() => finish(null, 'TIMEOUT'), opts.timeoutMs ?? 3000)
    s.on('message', onMessage)
    s.on('error', onError)
    const send = () => s.send(payload)
    if (own) s.connect(port, host, send)
    else send()
  })
}

/** A connected UDP socket kept across exchanges (one flow). */
export function udpClient(t: Teardown, host: string, port: number): Promise<UdpSocket> {
  const s = createSocket('udp4')
  t.teardown(() => {
    try {
      s.close()
    } catch {
      // closed already
    }
  })
  return new Promise((resolve) => s.connect(port, host, () => resolve(s)))
}

/** Endpoints object for a selector-less Service: one subset, ready addresses. */
export function endpointsYaml(
  name: string,
  ports: readonly { name?: string; port: number; protocol?: string }[],
  ready: readonly string[],
  notReady: readonly string[] = [],
  nodeName?: string,
): string {
  const addr = (ip: string) => `{ ip: ${ip}${nodeName ? `, nodeName: ${nodeName}` : ''} }`
  return `apiVersion: v1
kind: Endpoints
metadata: { name: ${name} }
subsets:
  - addresses: [${ready.map(addr).join(', ')}]
    notReadyAddresses: [${notReady.map(addr).join(', ')}]
    ports: [${ports.map((p) => `{ name: "${p.name ?? ''}", port: ${p.port}, protocol: ${p.protocol ?? 'TCP'} }`).join(', ')}]
`
}

/** The lb plane's view of one Service (status.planes.lb.services[key]). */
export function lbPorts(status: StatusJson | undefined, key: string): readonly LbPortJson[] {
  return status?.planes?.lb?.services?.[key] ?? []
}

/** The Snapshot view of one Service from /status. */
export function svcStatus(status: StatusJson | undefined, key: string): ServiceJson | undefined {
  return serviceOf(status, key)
}

/** Polls until the Service's first ClusterIP listener for `port` is open (or, with open=false, closed). */
export async function waitListener(
  m: MeshletProcess,
  key: string,
  pred: (l: LbListenerJson) => boolean,
  timeoutMs = 15000,
): Promise<LbListenerJson | undefined> {
  const status = await m.waitForStatus((s) => lbPorts(s, key).some((p) => p.listeners.some(pred)), timeoutMs)
  return lbPorts(status, key)
    .flatMap((p) => p.listeners)
    .find(pred)
}

/** ClusterIP of a Service once it is in /status. */
export async function clusterIP(m: MeshletProcess, key: string): Promise<string> {
  const s = await m.waitForStatus((s) => (svcStatus(s, key)?.clusterIPs?.length ?? 0) > 0)
  return svcStatus(s, key)!.clusterIPs[0]!
}

export { sleep }
