// `meshlet get` against a real running meshlet (issue 19): kubectl-style tables, -n/-A, -o wide|json|yaml, and an
// unreachable admin address named in the error.

import t from 'tap'
import { spawnSync } from 'node:child_process'
import { parse } from 'yaml'
import { MESHLET_BIN, startMeshlet } from '../helpers/meshlet.ts'

const MANIFESTS = `
apiVersion: v1
kind: Service
metadata: { name: web }
spec:
  clusterIP: None
  ports: [{ name: http, port: 80 }]
---
apiVersion: v1
kind: Endpoints
metadata: { name: web }
subsets:
  - addresses: [{ ip: 127.0.0.71 }]
    notReadyAddresses: [{ ip: 127.0.0.72 }]
    ports: [{ name: http, port: 8080 }]
---
apiVersion: v1
kind: Service
metadata: { name: lb, namespace: shop }
spec:
  type: LoadBalancer
  ports: [{ port: 80 }]
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: { name: pool-a, namespace: metallb-system }
spec: { addresses: [192.0.2.200/30] }
---
apiVersion: v1
kind: Pod
metadata: { name: web-1 }
spec: { containers: [{ name: web }] }
status: { podIP: 127.0.0.71 }
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: { name: site }
spec:
  ingressClassName: meshlet
  rules:
    - host: web.example
      http: { paths: [{ path: /, pathType: Prefix, backend: { service: { name: web, port: { name: http } } } }] }
`

t.test('get reads a running meshlet', async (t) => {
  const m = await startMeshlet(t, { manifests: { 'all.yaml': MANIFESTS }, args: ['--vip-mode', 'none'] })
  const admin = `${m.admin!.host}:${m.admin!.port}`
  const get = (...args: string[]) =>
    spawnSync(process.execPath, [MESHLET_BIN, 'get', ...args, '--admin', admin], { encoding: 'utf8', timeout: 30_000 })

  const svc = get('services')
  t.equal(svc.status, 0, svc.stderr)
  const lines = svc.stdout.trimEnd().split('\n')
  t.match(lines[0], /^NAME\s+TYPE\s+CLUSTER-IP\s+EXTERNAL-IP\s+PORT\(S\)\s+ENDPOINTS$/)
  t.match(lines[1], /^web\s+ClusterIP\s+None\s+<none>\s+80\/TCP\s+1\/2$/)
  t.equal(lines.length, 2, 'only the default namespace')
  t.equal(lines[0]!.indexOf('TYPE'), lines[1]!.indexOf('ClusterIP'), 'columns aligned')

  const shop = get('svc', '-n', 'shop')
  t.match(shop.stdout, /^lb\s+LoadBalancer\s+\S+\s+192\.0\.2\.20[0-3]\s+80:\d+\/TCP\s+0\/0$/m)
  const everywhere = get('services', '-A')
  t.match(everywhere.stdout, /^NAMESPACE\s+NAME/)
  t.match(everywhere.stdout, /^shop\s+lb\s/m)

  const ep = get('endpoints', '-o', 'wide')
  t.match(ep.stdout, /^web\s+127\.0\.0\.71:8080\s+127\.0\.0\.72:8080\s+<none>$/m)

  const pools = get('pools')
  t.match(pools.stdout, /^pool-a\s+1\s+4$/m)

  const pods = get('pods', '-o', 'wide')
  t.match(pods.stdout, /^NAME\s+READY\s+REASON\s+IP\s+NODE\s+RESTARTS$/m)
  t.match(pods.stdout, /^web-1\s+true\s+\S+\s+127\.0\.0\.71\s+/m)

  const ing = get('ingresses')
  t.match(ing.stdout, /^site\s+web\.example\s+1\s+accepted$/m)

  const json = JSON.parse(get('services', '-o', 'json').stdout) as Record<string, unknown>[]
  t.same(json, [
    {
      NAME: 'web',
      TYPE: 'ClusterIP',
      'CLUSTER-IP': 'None',
      'EXTERNAL-IP': '<none>',
      'PORT(S)': '80/TCP',
      ENDPOINTS: '1/2',
    },
  ])
  t.same(parse(get('services', '-o', 'yaml').stdout), json, 'yaml holds the same rows')

  const none = get('pods', '-n', 'empty')
  t.equal(none.status, 0)
  t.equal(none.stderr, 'No resources found in empty namespace.\n')
  const bad = get('things')
  t.equal(bad.status, 2)
  t.match(bad.stderr, /unknown resource "things"/)
})

t.test('get names the admin address it cannot reach', async (t) => {
  const r = spawnSync(process.execPath, [MESHLET_BIN, 'get', 'services', '--admin', '127.0.0.1:29118'], {
    encoding: 'utf8',
    timeout: 30_000,
  })
  t.equal(r.status, 1)
  t.match(r.stderr, /cannot read http:\/\/127\.0\.0\.1:29118\/status: .*ECONNREFUSED.*is meshlet up/)
})
