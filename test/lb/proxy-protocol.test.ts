// PROXY protocol towards backends (annotation meshlet.io/proxy-protocol: v1 | v2) through `meshlet up`: the backend
// reads the header before any client byte and sees the client's address and the Service address it dialled.

import t from 'tap'
import { createServer, connect, type Socket } from 'node:net'
import { createSocket } from 'node:dgram'
import { startMeshlet } from '../helpers/meshlet.ts'
import { clusterIP, endpointsYaml, netOf, udpClient, udpExchange, waitListener } from './helpers.ts'

const net = netOf(5)

/** A TCP backend that hands over the first bytes of each connection once `need` of them arrived. */
async function recorder(
  t: { teardown(fn: () => unknown): void },
  host: string,
): Promise<{ port: number; next: (need: number) => Promise<Buffer> }> {
  const waiting: { need: number; resolve: (b: Buffer) => void }[] = []
  const sockets = new Set<Socket>()
  const server = createServer((s) => {
    sockets.add(s)
    s.on('error', () => {})
    let buf = Buffer.alloc(0)
    s.on('data', (c) => {
      buf = Buffer.concat([buf, c])
      const w = waiting[0]
      if (w && buf.length >= w.need) {
        waiting.shift()
        w.resolve(buf)
        s.end()
      }
    })
  })
  await new Promise<void>((r) => server.listen(0, host, () => r()))
  t.teardown(
    () =>
      new Promise((r) => {
        for (const s of sockets) s.destroy()
        server.close(r)
      }),
  )
  return {
    port: (server.address() as { port: number }).port,
    next: (need) => new Promise((resolve) => waiting.push({ need, resolve })),
  }
}

function parseV2(b: Buffer): {
  ok: boolean
  cmd: number
  fam: number
  src: string
  dst: string
  srcPort: number
  dstPort: number
  length: number
} {
  const sig = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a])
  const len = b.readUInt16BE(14)
  const ip = (o: number) => [...b.subarray(o, o + 4)].join('.')
  return {
    ok: b.subarray(0, 12).equals(sig),
    cmd: b[12]!,
    fam: b[13]!,
    src: ip(16),
    dst: ip(20),
    srcPort: b.readUInt16BE(24),
    dstPort: b.readUInt16BE(26),
    length: 16 + len,
  }
}

t.test('PROXY protocol v1 and v2', { timeout: 60_000 }, async (t) => {
  const v1 = await recorder(t, net.ip(201))
  const v2 = await recorder(t, net.ip(202))
  const udpSeen: Buffer[] = []
  const udp = createSocket('udp4')
  await new Promise<void>((r) => udp.bind(0, net.ip(203), () => r()))
  udp.on('message', (m, r) => {
    udpSeen.push(m)
    udp.send('pong', r.port, r.address)
  })
  t.teardown(() => new Promise<void>((r) => udp.close(() => r())))

  const svc = (name: string, version: string, protocol = 'TCP') => `---
apiVersion: v1
kind: Service
metadata:
  name: ${name}
  annotations: { meshlet.io/proxy-protocol: "${version}" }
spec: { ports: [{ port: 80, protocol: ${protocol} }] }
`
  const m = await startMeshlet(t, {
    manifests: {
      'svc.yaml': svc('pp1', 'v1') + svc('pp2', 'v2') + svc('ppu', 'v2', 'UDP'),
      'ep.yaml': [
        endpointsYaml('pp1', [{ port: v1.port }], [net.ip(201)]),
        endpointsYaml('pp2', [{ port: v2.port }], [net.ip(202)]),
        endpointsYaml('ppu', [{ port: udp.address().port, protocol: 'UDP' }], [net.ip(203)]),
      ].join('---\n'),
    },
    args: ['--service-cidr', net.serviceCidr, '--node-address', net.ip(240)],
  })
  const vip1 = await clusterIP(m, 'default/pp1')
  const vip2 = await clusterIP(m, 'default/pp2')
  const vipU = await clusterIP(m, 'default/ppu')
  for (const n of ['pp1', 'pp2', 'ppu']) await waitListener(m, `default/${n}`, (l) => l.state === 'open')

  await t.test('v1: a text line with client and Service addresses, then the client’s bytes', async (t) => {
    const got = v1.next(60)
    const c = connect({ host: vip1, port: 80, localAddress: '127.0.0.2' })
    await new Promise<void>((r) => c.once('connect', () => r()))
    c.write('hello-from-client'.padEnd(20, '.'))
    const buf = (await got).toString('latin1')
    const line = buf.slice(0, buf.indexOf('\r\n'))
    t.equal(line, `PROXY TCP4 127.0.0.2 ${vip1} ${c.localPort} 80`, 'v1 header names client and Service address')
    t.ok(buf.slice(line.length + 2).startsWith('hello-from-client'), 'client bytes follow the header')
    c.destroy()
  })

  await t.test('v2: binary header, PROXY command, TCP over IPv4', async (t) => {
    const got = v2.next(28 + 5)
    const c = connect({ host: vip2, port: 80, localAddress: '127.0.0.3' })
    await new Promise<void>((r) => c.once('connect', () => r()))
    c.write('hello')
    const buf = await got
    const h = parseV2(buf)
    t.ok(h.ok, 'v2 signature')
    t.equal(h.cmd, 0x21, 'version 2, PROXY')
    t.equal(h.fam, 0x11, 'AF_INET, STREAM')
    t.same([h.src, h.srcPort, h.dst, h.dstPort], ['127.0.0.3', c.localPort, vip2, 80], 'addresses and ports')
    t.equal(buf.subarray(h.length).toString(), 'hello', 'client bytes follow the header')
    c.destroy()
  })

  await t.test('v2 over UDP: each datagram carries the header (DGRAM)', async (t) => {
    const s = await udpClient(t, vipU, 80)
    const r = await udpExchange(vipU, 80, 'ping', { socket: s })
    t.equal(r.reply, 'pong', 'the reply comes back without a header')
    const d = udpSeen[0]!
    const h = parseV2(d)
    t.ok(h.ok, 'v2 signature')
    t.equal(h.fam, 0x12, 'AF_INET, DGRAM')
    t.same([h.src, h.srcPort, h.dst, h.dstPort], ['127.0.0.1', s.address().port, vipU, 80])
    t.equal(d.subarray(h.length).toString(), 'ping', 'payload follows')
    // Later datagrams of the same flow carry it too.
    t.equal((await udpExchange(vipU, 80, 'again', { socket: s })).reply, 'pong')
    const d2 = udpSeen[1]!
    const h2 = parseV2(d2)
    t.ok(h2.ok, 'second datagram of the flow: v2 signature')
    t.equal(d2.subarray(h2.length).toString(), 'again', 'second datagram: payload after the header')
  })
})
