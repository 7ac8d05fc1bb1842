// Node-local traffic with two `meshlet up` processes as nodes a and b on one host (distinct --node, --node-address
// and service CIDRs; the same manifests): externalTrafficPolicy Local on NodePorts, internalTrafficPolicy Local on a
// ClusterIP, refusal at once when the node has no local endpoint (never a remote one), healthCheckNodePort JSON
// 200/503, and trafficDistribution PreferClose from Pods + Node zones and from EndpointSlice hints
// (specs/l4-health.md §2.2, §2.3, §3.8, §3.9).

import t from 'tap'
import { startMeshlet, type MeshletProcess } from '../helpers/meshlet.ts'
import type { StatusJson } from '../helpers/status.ts'
import { connectError, identify, identifyServer, netOf, svcStatus, waitListener } from './helpers.ts'

const net = netOf(4)

t.test('two nodes: Local policies, health check node ports, PreferClose', { timeout: 80_000 }, async (t) => {
  const podA = await identifyServer(t, net.ip(201))
  const podB = await identifyServer(t, net.ip(202))
  const sliceA = await identifyServer(t, net.ip(203))
  const sliceB = await identifyServer(t, net.ip(204), sliceA.port)
  const pod = (name: string, ip: string, port: number, node: string, labels: string) => `---
apiVersion: v1
kind: Pod
metadata: { name: ${name}, labels: { ${labels} } }
spec:
  nodeName: ${node}
  containers: [{ name: app, ports: [{ name: http, containerPort: ${port} }] }]
status: { podIP: ${ip} }
`
  const manifests = `apiVersion: v1
kind: Node
metadata: { name: a, labels: { topology.kubernetes.io/zone: za } }
---
apiVersion: v1
kind: Node
metadata: { name: b, labels: { topology.kubernetes.io/zone: zb } }
${pod('web-a', net.ip(201), podA.port, 'a', 'app: web')}${pod('web-b', net.ip(202), podB.port, 'b', 'app: web, side: b')}---
apiVersion: v1
kind: Service
metadata: { name: ext }
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: { app: web }
  ports: [{ port: 80, targetPort: http }]
---
apiVersion: v1
kind: Service
metadata: { name: only-b }
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: { side: b }
  ports: [{ port: 80, targetPort: http }]
---
apiVersion: v1
kind: Service
metadata: { name: np-cluster }
spec:
  type: NodePort
  selector: { side: b }
  ports: [{ port: 80, targetPort: http }]
---
apiVersion: v1
kind: Service
metadata: { name: int }
spec:
  internalTrafficPolicy: Local
  selector: { app: web }
  ports: [{ port: 80, targetPort: http }]
---
apiVersion: v1
kind: Service
metadata: { name: int-b }
spec:
  internalTrafficPolicy: Local
  selector: { side: b }
  ports: [{ port: 80, targetPort: http }]
---
apiVersion: v1
kind: Service
metadata: { name: close }
spec:
  trafficDistribution: PreferClose
  selector: { app: web }
  ports: [{ port: 80, targetPort: http }]
---
apiVersion: v1
kind: Service
metadata: { name: close-b }
spec:
  trafficDistribution: PreferClose
  selector: { side: b }
  ports: [{ port: 80, targetPort: http }]
---
apiVersion: v1
kind: Service
metadata: { name: hinted }
spec:
  ports: [{ name: http, port: 80 }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: hinted-1, labels: { kubernetes.io/service-name: hinted } }
addressType: IPv4
ports: [{ name: http, port: ${sliceA.port} }]
endpoints:
  - { addresses: [${net.ip(203)}], zone: za, hints: { forZones: [{ name: za }] } }
  - { addresses: [${net.ip(204)}], zone: zb, hints: { forZones: [{ name: zb }] } }
`
  const start = (node: string, addr: string, cidr: string) =>
    startMeshlet(t, {
      manifests: { 'm.yaml': manifests },
      args: ['--node', node, '--node-address', addr, '--service-cidr', cidr],
    })
  const addrA = net.ip(241)
  const addrB = net.ip(242)
  const [a, b] = await Promise.all([start('a', addrA, `${net.prefix}.0/26`), start('b', addrB, `${net.prefix}.64/26`)])

  const ready = (m: MeshletProcess) =>
    m.waitForStatus((s) =>
      ['ext', 'only-b', 'int', 'close', 'hinted'].every(
        (n) => (svcStatus(s, `default/${n}`)?.ports[0]?.endpoints.length ?? 0) > 0,
      ),
    )
  const [sa, sb] = await Promise.all([ready(a), ready(b)])
  const nodePort = (s: StatusJson, name: string) => svcStatus(s, `default/${name}`)!.ports[0]!.nodePort!
  const vip = (s: StatusJson, name: string) => svcStatus(s, `default/${name}`)!.clusterIPs[0]!
  await waitListener(a, 'default/ext', (l) => l.address === addrA && l.state === 'open')
  await waitListener(b, 'default/only-b', (l) => l.address === addrB && l.state === 'open')
  await waitListener(a, 'default/hinted', (l) => l.state === 'open')
  await waitListener(b, 'default/hinted', (l) => l.state === 'open')

  await t.test('externalTrafficPolicy Local: NodePort traffic stays on the node', async (t) => {
    t.equal(nodePort(sa, 'ext'), nodePort(sb, 'ext'), 'same NodePort on both nodes (deterministic allocation)')
    for (let i = 0; i < 4; i++) {
      t.equal(await identify(addrA, nodePort(sa, 'ext')), podA.id, `node a → its own Pod (${i + 1})`)
      t.equal(await identify(addrB, nodePort(sb, 'ext')), podB.id, `node b → its own Pod (${i + 1})`)
    }
  })

  await t.test('no local endpoint: refused at once on that node, served on the other', async (t) => {
    const r = await connectError(addrA, nodePort(sa, 'only-b'))
    t.equal(r.code, 'ECONNREFUSED', 'node a refuses the Local NodePort (no fallback to node b)')
    t.ok(
      r.ms < 1000,
      `refused in ${r.ms.toFixed(1)} ms, not held (ECONNREFUSED, not TIMEOUT, is the check; 1 s allows a loaded machine)`,
    )
    t.equal(await identify(addrB, nodePort(sb, 'only-b')), podB.id, 'node b serves it')
    // The same endpoints with externalTrafficPolicy Cluster are reachable from node a.
    t.equal(
      await identify(addrA, nodePort(sa, 'np-cluster')),
      podB.id,
      'Cluster policy: node a forwards to node b’s Pod',
    )
  })

  await t.test('internalTrafficPolicy Local: ClusterIP traffic stays on the node', async (t) => {
    for (let i = 0; i < 3; i++)
      t.equal(await identify(vip(sa, 'int'), 80), podA.id, `node a ClusterIP → Pod on a (${i + 1})`)
    for (let i = 0; i < 3; i++)
      t.equal(await identify(vip(sb, 'int'), 80), podB.id, `node b ClusterIP → Pod on b (${i + 1})`)
    const r = await connectError(vip(sa, 'int-b'), 80)
    t.equal(r.code, 'ECONNREFUSED', 'no local endpoint on a: the ClusterIP refuses')
    t.ok(
      r.ms < 1000,
      `refused in ${r.ms.toFixed(1)} ms, not held (ECONNREFUSED, not TIMEOUT, is the check; 1 s allows a loaded machine)`,
    )
    t.equal(await identify(vip(sb, 'int-b'), 80), podB.id, 'node b serves it')
  })

  await t.test('healthCheckNodePort: kube-proxy’s JSON, 200 with local endpoints, 503 without', async (t) => {
    const hc = async (addr: string, s: StatusJson, name: string, path: string) => {
      const port = svcStatus(s, `default/${name}`)!.healthCheckNodePort!
      t.ok(port >= 30000 && port <= 32767, `${name}: healthCheckNodePort ${port} allocated`)
      const res = await fetch(`http://${addr}:${port}${path}`, { method: 'GET' })
      return { status: res.status, headers: res.headers, body: JSON.parse(await res.text()) }
    }
    const okA = await hc(addrA, sa, 'ext', '/healthz')
    t.equal(okA.status, 200)
    t.same(okA.body, { service: { namespace: 'default', name: 'ext' }, localEndpoints: 1, serviceProxyHealthy: true })
    t.equal(okA.headers.get('content-type'), 'application/json')
    t.equal(okA.headers.get('x-content-type-options'), 'nosniff')
    t.equal(okA.headers.get('x-load-balancing-endpoint-weight'), '1')
    const bad = await hc(addrA, sa, 'only-b', '/any/path')
    t.equal(bad.status, 503, 'node a: 503 for only-b')
    t.same(bad.body, {
      service: { namespace: 'default', name: 'only-b' },
      localEndpoints: 0,
      serviceProxyHealthy: true,
    })
    const good = await hc(addrB, sb, 'only-b', '/')
    t.equal(good.status, 200, 'node b: 200 for only-b')
    t.equal(good.body.localEndpoints, 1)
  })

  await t.test('trafficDistribution PreferClose: same zone first, everything when the zone has none', async (t) => {
    for (let i = 0; i < 4; i++)
      t.equal(await identify(vip(sa, 'close'), 80), podA.id, `Pods + Node zones: node a (za) → za Pod (${i + 1})`)
    for (let i = 0; i < 2; i++)
      t.equal(await identify(vip(sb, 'close'), 80), podB.id, `node b (zb) → zb Pod (${i + 1})`)
    t.equal(await identify(vip(sa, 'close-b'), 80), podB.id, 'no endpoint in za: node a falls back to the other zone')
    for (let i = 0; i < 4; i++)
      t.equal(await identify(vip(sa, 'hinted'), 80), sliceA.id, `EndpointSlice hints: node a → forZones za (${i + 1})`)
    for (let i = 0; i < 2; i++)
      t.equal(await identify(vip(sb, 'hinted'), 80), sliceB.id, `EndpointSlice hints: node b → forZones zb (${i + 1})`)
  })
})
