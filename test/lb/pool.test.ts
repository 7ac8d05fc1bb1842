// LoadBalancer addresses through `meshlet up` (specs/l4-health.md §5.3): a pool of 10 loopback addresses (a /29 and
// a range) and 11 LoadBalancer Services. Ten listen on their address; the 11th is pending with MetalLB's text in
// /status and exactly one warning line; deleting a Service hands its address to the pending one; a restart with the
// same manifests gives the same addresses.

import t from 'tap'
import { startMeshlet, type MeshletProcess } from '../helpers/meshlet.ts'
import type { StatusJson } from '../helpers/status.ts'
import { identify, identifyServer, netOf, svcStatus, waitListener } from './helpers.ts'
import { LB_ERRORS } from '../../lb/errors.ts'

const net = netOf(3)

t.test('pool exhaustion, release and retry, restart', { timeout: 80_000 }, async (t) => {
  const backend = await identifyServer(t, net.ip(201))
  const names = Array.from({ length: 11 }, (_, i) => `svc-${String(i + 1).padStart(2, '0')}`)
  const pool = `apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: { name: loop, namespace: metallb-system }
spec:
  addresses: ["${net.ip(128)}/29", "${net.ip(136)}-${net.ip(137)}"]
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: { name: all, namespace: metallb-system }
---
apiVersion: v1
kind: Pod
metadata: { name: web, labels: { app: web } }
spec:
  containers: [{ name: app, ports: [{ name: http, containerPort: ${backend.port} }] }]
status: { podIP: ${net.ip(201)} }
`
  const services = (list: string[]) =>
    list
      .map(
        (n) => `---
apiVersion: v1
kind: Service
metadata: { name: ${n} }
spec:
  type: LoadBalancer
  selector: { app: web }
  ports: [{ port: 80, targetPort: http }]
`,
      )
      .join('')
  const args = ['--service-cidr', net.serviceCidr, '--node-address', net.ip(240)]
  const pendingText = 'Failed to allocate IP for "default/svc-11": no available IPs'
  const addresses = (s: StatusJson) =>
    Object.fromEntries(names.map((n) => [n, svcStatus(s, `default/${n}`)?.loadBalancerIPs?.[0] ?? null]))
  const allocated = (m: MeshletProcess) =>
    m.waitForStatus(
      (s) =>
        names.every((n) => svcStatus(s, `default/${n}`) !== undefined) &&
        svcStatus(s, 'default/svc-10')?.loadBalancerIPs.length === 1,
    )

  const m = await startMeshlet(t, { manifests: { 'pool.yaml': pool, 'services.yaml': services(names) }, args })
  const s1 = await allocated(m)
  const first = addresses(s1)
  for (let i = 0; i < 10; i++) t.equal(first[names[i]!], net.ip(128 + i), `${names[i]} has ${net.ip(128 + i)}`)
  t.equal(first['svc-11'], null, 'svc-11 has no address')
  t.equal(svcStatus(s1, 'default/svc-11')?.loadBalancerPending, pendingText, 'MetalLB’s text in /status')
  const lbPool = s1.planes.lb?.pools.find((p) => p.pool === 'loop')
  t.equal(lbPool?.capacity, 10, 'pool capacity 10 in /status')
  t.equal(lbPool?.assigned, 10, 'pool fully assigned')
  t.same(
    lbPool?.pending,
    [
      {
        service: 'default/svc-11',
        code: 'MLT_LB_POOL_EXHAUSTED',
        reason: pendingText,
        fix: LB_ERRORS.MLT_LB_POOL_EXHAUSTED.fix,
      },
    ],
    'pending list in /status, with the code to branch on and what to do',
  )
  t.equal(lbPool?.advertised, true, 'the pool is advertised')

  // Every allocated address really listens.
  await waitListener(m, 'default/svc-10', (l) => l.address === net.ip(137) && l.state === 'open')
  t.equal(await identify(net.ip(137), 80), backend.id, 'the 10th LoadBalancer address forwards to the backend')
  t.equal(await identify(net.ip(128), 80), backend.id, 'the first too (the network address of the /29)')

  // Exactly one warning, even after another reload.
  m.writeManifest(
    'unrelated.yaml',
    `apiVersion: v1
kind: Service
metadata: { name: unrelated }
spec: { ports: [{ port: 9 }] }
`,
  )
  await m.waitForStatus((s) => svcStatus(s, 'default/unrelated') !== undefined)
  const warnings = m.logs.filter((l) => l.level === 40 && typeof l.msg === 'string' && l.msg.includes(pendingText))
  t.equal(warnings.length, 1, 'one warning line for the pending Service')
  t.match(
    warnings[0],
    { service: 'default/svc-11', code: 'MLT_LB_POOL_EXHAUSTED', pools: [{ pool: 'loop', assigned: 10, capacity: 10 }] },
    'it names the pool and its use',
  )

  // Delete svc-03: the pending one gets its address, nobody else moves.
  m.writeManifest('services.yaml', services(names.filter((n) => n !== 'svc-03')))
  const s2 = await m.waitForStatus((s) => svcStatus(s, 'default/svc-11')?.loadBalancerIPs.length === 1)
  const second = addresses(s2)
  t.equal(second['svc-11'], net.ip(130), 'svc-11 got the freed address')
  t.equal(svcStatus(s2, 'default/svc-11')?.loadBalancerPending, null, 'no longer pending')
  for (const n of names.filter((n) => n !== 'svc-03' && n !== 'svc-11'))
    t.equal(second[n], first[n], `${n} kept its address`)
  await waitListener(m, 'default/svc-11', (l) => l.address === net.ip(130) && l.state === 'open')
  t.equal(await identify(net.ip(130), 80), backend.id, 'the address now serves svc-11')
  await m.waitForLog((l) => l.msg === 'LoadBalancer address assigned' && l.service === 'default/svc-11')
  await m.stop()

  // Restart with the original manifests: the same addresses as the first start.
  const m2 = await startMeshlet(t, { manifests: { 'pool.yaml': pool, 'services.yaml': services(names) }, args })
  const s3 = await allocated(m2)
  t.same(addresses(s3), first, 'same manifests after a restart: same addresses')
})
