// UDP through `meshlet up` (specs/l4-health.md §3.4, §3.6): echo through a Service with round robin per flow, one
// flow per client socket, the idle timeout by annotation (1 s without a reply; the 120 s stream timeout once the
// endpoint replied), a flow dropped when its endpoint leaves, and the connected-socket ECONNREFUSED when the Service
// port has no endpoint.

import t from 'tap'
import { startMeshlet } from '../helpers/meshlet.ts'
import {
  clusterIP,
  endpointsYaml,
  lbPorts,
  netOf,
  sleep,
  svcStatus,
  udpClient,
  udpEchoServer,
  udpExchange,
  waitListener,
} from './helpers.ts'

const net = netOf(2)

t.test('UDP through meshlet up', { timeout: 60_000 }, async (t) => {
  const a = await udpEchoServer(t, net.ip(201))
  const b = await udpEchoServer(t, net.ip(202), a.port)
  const lone = await udpEchoServer(t, net.ip(211))
  const services = `apiVersion: v1
kind: Service
metadata:
  name: echo
  annotations: { meshlet.io/udp-timeout-seconds: "1" }
spec: { ports: [{ port: 53, protocol: UDP }] }
---
apiVersion: v1
kind: Service
metadata: { name: lone }
spec: { ports: [{ port: 53, protocol: UDP }] }
`
  const echoEndpoints = (ips: string[]) => endpointsYaml('echo', [{ port: a.port, protocol: 'UDP' }], ips)
  const m = await startMeshlet(t, {
    manifests: {
      'services.yaml': services,
      'echo.yaml': echoEndpoints([a.socket.address().address, b.socket.address().address]),
    },
    args: ['--service-cidr', net.serviceCidr, '--node-address', net.ip(240)],
  })
  const vip = await clusterIP(m, 'default/echo')
  const loneVip = await clusterIP(m, 'default/lone')
  await waitListener(m, 'default/echo', (l) => l.state === 'open' && l.protocol === 'UDP')
  const flows = async () => lbPorts(await m.status(), 'default/echo')[0]?.listeners[0]?.flows

  await t.test('echo: datagrams of one flow stay on one endpoint, new flows rotate', async (t) => {
    const s1 = await udpClient(t, vip, 53)
    const s2 = await udpClient(t, vip, 53)
    const r1 = await udpExchange(vip, 53, 'one', { socket: s1 })
    t.equal(r1.reply, `${a.id}|one`, 'first flow → first endpoint, payload intact')
    t.equal((await udpExchange(vip, 53, 'two', { socket: s1 })).reply, `${a.id}|two`, 'same flow, same endpoint')
    t.equal(
      (await udpExchange(vip, 53, 'three', { socket: s2 })).reply,
      `${b.id}|three`,
      'second flow → second endpoint',
    )
    const big = 'x'.repeat(60000)
    t.equal(
      (await udpExchange(vip, 53, big, { socket: s2 })).reply,
      `${b.id}|${big}`,
      'a 60000-byte datagram keeps its boundary',
    )
    t.equal(await flows(), 2, 'two flows in /status')
    s1.close()
    s2.close()
  })

  await t.test('idle timeout 1 s without a reply; replied flows use the stream timeout', async (t) => {
    // Wait for the flows of the previous test: they were answered, so the 120 s stream timeout keeps them.
    await sleep(2200)
    t.equal(await flows(), 2, 'answered flows survive 2 s idle (stream timeout 120 s)')
    const s = await udpClient(t, vip, 53)
    const peersBefore = new Set([...a.peers, ...b.peers])
    await udpExchange(vip, 53, 'silent-1', { socket: s, timeoutMs: 300 })
    t.equal(await flows(), 3, 'an unanswered datagram opened a flow')
    // The 1 s idle timeout plus one sweep (1 s) later, the flow is gone.
    await m.waitForStatus((st) => lbPorts(st, 'default/echo')[0]?.listeners[0]?.flows === 2, 5000)
    t.pass('the unanswered flow expired after about 1 s idle')
    // The same client socket now starts a new flow: a new upstream socket (a new source port at the backend).
    const r = await udpExchange(vip, 53, 'again', { socket: s })
    t.ok(r.reply?.endsWith('|again'), 'the client still gets answers')
    const newPeers = [...a.peers, ...b.peers].filter((p) => !peersBefore.has(p))
    t.equal(newPeers.length, 2, 'two upstream sockets were used for that client: one per flow')
  })

  await t.test('a flow whose endpoint leaves is dropped; the next datagram picks again', async (t) => {
    const s = await udpClient(t, vip, 53)
    const first = await udpExchange(vip, 53, 'p', { socket: s })
    const firstId = first.reply!.split('|')[0]!
    const other = firstId === a.id ? b : a
    m.writeManifest('echo.yaml', echoEndpoints([other.socket.address().address]))
    await m.waitForStatus((st) => lbPorts(st, 'default/echo')[0]?.usable.cluster === 1)
    t.equal(
      (await udpExchange(vip, 53, 'q', { socket: s })).reply,
      `${other.id}|q`,
      'the same client socket now reaches the remaining endpoint',
    )
  })

  await t.test('no endpoint: a connected UDP socket gets ECONNREFUSED at once; an endpoint reopens it', async (t) => {
    const times: number[] = []
    for (let i = 0; i < 5; i++) {
      const r = await udpExchange(loneVip, 53, 'hello')
      t.equal(r.code, 'ECONNREFUSED', 'ECONNREFUSED on the connected socket')
      times.push(r.ms)
    }
    times.sort((x, y) => x - y)
    t.ok(times[2]! < 50, `refused in < 50 ms (median ${times[2]!.toFixed(1)} ms)`)
    // A client that keeps its socket reaches the endpoint with its next datagram once it exists.
    const s = await udpClient(t, loneVip, 53)
    s.on('error', () => {})
    m.writeManifest('lone.yaml', endpointsYaml('lone', [{ port: lone.port, protocol: 'UDP' }], [net.ip(211)]))
    await waitListener(m, 'default/lone', (l) => l.state === 'open')
    t.equal(
      (await udpExchange(loneVip, 53, 'now', { socket: s })).reply,
      `${lone.id}|now`,
      'the kept socket gets through',
    )
    t.ok(svcStatus(await m.status(), 'default/lone'), 'service in status')
  })
})
