// Endpoint derivation (specs/l4-health.md §2.1) and allocation, from YAML through validation to a Snapshot.

import t from 'tap'
import { loadManifestText } from '../../config/load.ts'
import { Store } from '../../model/store.ts'
import { parseCidr } from '../../model/ip.ts'
import type { Snapshot, ServiceState } from '../../model/snapshot.ts'

function snapshotOf(yaml: string, health?: (s: Store) => void): Snapshot {
  const loaded = loadManifestText(yaml, 'test.yaml')
  if (loaded.errors.length > 0) throw new Error(JSON.stringify(loaded.errors))
  const store = new Store({
    nodeName: 'node-a',
    serviceCidrs: [parseCidr('127.96.0.0/16')!, parseCidr('fd00:96::/112')!],
  })
  store.setObjects(loaded.objects, loaded.errors)
  health?.(store)
  return store.flush()!
}

function svc(s: Snapshot, key: string): ServiceState {
  const found = s.services.find((x) => x.key === key)
  if (!found) throw new Error(`no service ${key}`)
  return found
}

const pods = `
apiVersion: v1
kind: Pod
metadata: { name: web-1, labels: { app: web, tier: fe } }
spec:
  nodeName: node-a
  hostname: web-1
  subdomain: web
  containers:
    - name: c
      ports: [{ name: http, containerPort: 8080 }, { name: dns, containerPort: 53, protocol: UDP }]
status: { podIP: 127.0.0.11 }
---
apiVersion: v1
kind: Pod
metadata: { name: web-2, labels: { app: web } }
spec:
  nodeName: node-b
  containers:
    - name: c
      ports: [{ name: http, containerPort: 9090 }]
      readinessProbe: { httpGet: { path: /, port: http } }
status: { podIP: 127.0.0.12 }
---
apiVersion: v1
kind: Pod
metadata: { name: web-3, labels: { app: web }, deletionTimestamp: "2026-01-01T00:00:00Z" }
spec:
  containers:
    - name: c
      ports: [{ name: http, containerPort: 8080 }]
status: { podIP: 127.0.0.13 }
---
apiVersion: v1
kind: Pod
metadata: { name: other, namespace: other, labels: { app: web } }
spec:
  containers: [{ name: c, ports: [{ name: http, containerPort: 8080 }] }]
status: { podIP: 127.0.0.14 }
---
apiVersion: v1
kind: Pod
metadata: { name: no-ip, labels: { app: web } }
spec:
  containers: [{ name: c }]
`

t.test('selector picks Pods of the namespace by labels; named targetPort per Pod', async (t) => {
  const s = snapshotOf(`${pods}
---
apiVersion: v1
kind: Service
metadata: { name: web }
spec:
  selector: { app: web }
  ports:
    - { name: http, port: 80, targetPort: http }
    - { name: dns, port: 53, targetPort: dns, protocol: UDP }
`)
  const web = svc(s, 'default/web')
  t.equal(web.clusterIPs.length, 1, 'SingleStack by default: one ClusterIP')
  t.ok(web.clusterIPs[0]!.startsWith('127.96.'))
  const http = web.ports[0]!
  t.same(
    http.endpoints.map((e) => [e.ip, e.port, e.ready, e.serving, e.terminating, e.nodeName, e.pod]),
    [
      ['127.0.0.11', 8080, true, true, false, 'node-a', 'default/web-1'],
      ['127.0.0.12', 9090, false, false, false, 'node-b', 'default/web-2'],
      ['127.0.0.13', 8080, false, true, true, null, 'default/web-3'],
    ],
    'ready/serving/terminating as Kubernetes derives them; the other namespace and the Pod without IP are left out',
  )
  t.same(
    web.ports[1]!.endpoints.map((e) => [e.ip, e.port]),
    [['127.0.0.11', 53]],
    'UDP port resolved by name and protocol',
  )
  t.match(web.warnings.join('\n'), /Pod default\/web-2 has no container port named "dns"/)
  t.equal(
    web.addresses.find((a) => a.ip === '127.0.0.11')?.hostname,
    'web-1',
    'hostname when subdomain names the Service',
  )
})

t.test('PreferDualStack gets one ClusterIP per configured family', async (t) => {
  const s = snapshotOf(`
apiVersion: v1
kind: Service
metadata: { name: dual }
spec: { ipFamilyPolicy: PreferDualStack, ports: [{ port: 80 }] }
`)
  const ips = svc(s, 'default/dual').clusterIPs
  t.equal(ips.length, 2)
  t.match(ips[0], /^127\.96\./)
  t.match(ips[1], /^fd00:96::/)
})

t.test('a health verdict makes a probed Pod ready', async (t) => {
  const s = snapshotOf(
    `${pods}
---
apiVersion: v1
kind: Service
metadata: { name: web }
spec:
  selector: { app: web }
  ports: [{ port: 80, targetPort: http }]
`,
    (store) => store.setPodHealth('default/web-2', { ready: true, started: true, restartCount: 0, reason: null }),
  )
  const ep = svc(s, 'default/web').ports[0]!.endpoints.find((e) => e.ip === '127.0.0.12')!
  t.equal(ep.ready, true)
  t.equal(s.pods.find((p) => p.key === 'default/web-2')?.health?.ready, true)
})

t.test('publishNotReadyAddresses makes every endpoint ready', async (t) => {
  const s = snapshotOf(`${pods}
---
apiVersion: v1
kind: Service
metadata: { name: web }
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector: { app: web }
  ports: [{ port: 80, targetPort: 8080 }]
`)
  const web = svc(s, 'default/web')
  t.equal(web.headless, true)
  t.same(web.clusterIPs, [])
  t.same(
    web.ports[0]!.endpoints.map((e) => e.ready),
    [true, true, true],
  )
  t.same(
    web.ports[0]!.endpoints.map((e) => e.serving),
    [true, false, true],
    'serving still follows the Pod',
  )
})

t.test('several Services select one Pod', async (t) => {
  const s = snapshotOf(`${pods}
---
apiVersion: v1
kind: Service
metadata: { name: a }
spec: { selector: { tier: fe }, ports: [{ port: 80, targetPort: 8080 }] }
---
apiVersion: v1
kind: Service
metadata: { name: b }
spec: { selector: { app: web, tier: fe }, ports: [{ port: 81, targetPort: 8080 }] }
`)
  t.same(
    svc(s, 'default/a').ports[0]!.endpoints.map((e) => e.ip),
    ['127.0.0.11'],
  )
  t.same(
    svc(s, 'default/b').ports[0]!.endpoints.map((e) => e.ip),
    ['127.0.0.11'],
  )
})

t.test('without a selector: Endpoints, with ports matched by name', async (t) => {
  const s = snapshotOf(`
apiVersion: v1
kind: Service
metadata: { name: db }
spec: { ports: [{ name: pg, port: 5432 }, { name: metrics, port: 9187 }] }
---
apiVersion: v1
kind: Endpoints
metadata: { name: db }
subsets:
  - addresses: [{ ip: 127.0.0.31, nodeName: node-a }]
    notReadyAddresses: [{ ip: 127.0.0.32 }]
    ports: [{ name: pg, port: 15432 }]
`)
  const db = svc(s, 'default/db')
  t.same(
    db.ports[0]!.endpoints.map((e) => [e.ip, e.port, e.ready, e.serving]),
    [
      ['127.0.0.31', 15432, true, true],
      ['127.0.0.32', 15432, false, false],
    ],
  )
  t.same(db.ports[1]!.endpoints, [], 'a port the Endpoints do not list has no endpoints')
})

t.test('EndpointSlices win over Endpoints; absent conditions read as ready and serving', async (t) => {
  const s = snapshotOf(`
apiVersion: v1
kind: Service
metadata: { name: db }
spec: { ports: [{ name: pg, port: 5432 }] }
---
apiVersion: v1
kind: Endpoints
metadata: { name: db }
subsets: [{ addresses: [{ ip: 127.0.0.99 }], ports: [{ name: pg, port: 1 }] }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: db-abc, labels: { kubernetes.io/service-name: db } }
addressType: IPv4
ports: [{ name: pg, port: 15432, protocol: TCP }]
endpoints:
  - addresses: [127.0.0.41]
  - addresses: [127.0.0.42]
    conditions: { ready: false, serving: true, terminating: true }
    nodeName: node-b
    zone: z1
    hints: { forZones: [{ name: z1 }] }
`)
  const eps = svc(s, 'default/db').ports[0]!.endpoints
  t.same(
    eps.map((e) => [e.ip, e.port, e.ready, e.serving, e.terminating]),
    [
      ['127.0.0.41', 15432, true, true, false],
      ['127.0.0.42', 15432, false, true, true],
    ],
  )
  t.same(eps[1]!.forZones, ['z1'])
  t.equal(eps[1]!.zone, 'z1')
})

t.test('passive ejection takes one endpoint out', async (t) => {
  const s = snapshotOf(
    `${pods}
---
apiVersion: v1
kind: Service
metadata: { name: web }
spec: { selector: { app: web }, ports: [{ port: 80, targetPort: 8080 }] }
`,
    (store) => store.setEjected('default/web|127.0.0.11|8080', '5 consecutive failures'),
  )
  const ep = svc(s, 'default/web').ports[0]!.endpoints.find((e) => e.ip === '127.0.0.11')!
  t.equal(ep.ready, false)
  t.equal(s.ejected['default/web|127.0.0.11|8080'], '5 consecutive failures')
})

t.test('allocation is deterministic and honours written values', async (t) => {
  const services = Array.from(
    { length: 30 },
    (_, i) => `
apiVersion: v1
kind: Service
metadata: { name: s${i} }
spec: { type: NodePort, ports: [{ port: 80 }] }
`,
  )
  const fixed = `
apiVersion: v1
kind: Service
metadata: { name: fixed }
spec: { type: NodePort, clusterIP: 127.96.0.7, ports: [{ port: 80, nodePort: 30080 }] }
`
  const a = snapshotOf([fixed, ...services].join('\n---\n'))
  const b = snapshotOf([...services].reverse().concat(fixed).join('\n---\n'))
  const view = (s: Snapshot) => s.services.map((x) => [x.key, x.clusterIPs.join(), x.ports[0]!.nodePort])
  t.same(view(a), view(b), 'same addresses whatever the order of the documents')
  t.same(svc(a, 'default/fixed').clusterIPs[0], '127.96.0.7')
  t.equal(svc(a, 'default/fixed').ports[0]!.nodePort, 30080)
  const ips = a.services.map((x) => x.clusterIPs[0])
  t.equal(new Set(ips).size, ips.length, 'no address given twice')
  const ports = a.services.map((x) => x.ports[0]!.nodePort)
  t.ok(ports.every((p) => p !== null && p >= 30000 && p <= 32767))
  t.equal(new Set(ports).size, ports.length, 'no node port given twice')
})

t.test('a second Service claiming a written ClusterIP gets an error, not the address', async (t) => {
  const s = snapshotOf(`
apiVersion: v1
kind: Service
metadata: { name: a }
spec: { clusterIP: 127.96.1.1, ports: [{ port: 80 }] }
---
apiVersion: v1
kind: Service
metadata: { name: b }
spec: { clusterIP: 127.96.1.1, ports: [{ port: 80 }] }
`)
  t.same(svc(s, 'default/a').clusterIPs, ['127.96.1.1'])
  t.same(svc(s, 'default/b').clusterIPs, [])
  t.match(svc(s, 'default/b').warnings.join(), /already allocated/)
})

t.test('snapshots are structured-cloneable plain data', async (t) => {
  const s = snapshotOf(`${pods}
---
apiVersion: v1
kind: Service
metadata: { name: web }
spec: { selector: { app: web }, ports: [{ port: 80, targetPort: 8080 }] }
`)
  t.same(structuredClone(s), s)
})
