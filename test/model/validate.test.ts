// Validation: the invalid-manifest table (fixture → exact code and field path), the error line format, and the
// Kubernetes defaults filled into valid objects.

import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { dirname, join } from 'node:path'
import { loadManifestText, loadPaths } from '../../config/load.ts'
import { formatObjectError, validateDocument } from '../../model/validate.ts'
import { CONFIG_ERROR_CODES } from '../../model/config-errors.ts'
import type {
  KubeObject,
  Pod,
  Service,
  Ingress,
  Secret,
  EndpointSlice,
  Endpoints,
  IPAddressPool,
  Node,
  IngressClass,
  L2Advertisement,
} from '../../model/objects.ts'
import { INVALID_CASES } from '../config/invalid-cases.ts'

const here = dirname(fileURLToPath(import.meta.url))
const INVALID = join(here, '..', 'fixtures', 'invalid')
const VALID = join(here, '..', 'fixtures', 'valid')

t.test('invalid fixtures: each gives exactly its code at its field path', async (t) => {
  t.ok(INVALID_CASES.length >= 40, `${INVALID_CASES.length} cases`)
  const files = readdirSync(INVALID)
    .filter((f) => f.endsWith('.yaml'))
    .sort()
  t.same(files, INVALID_CASES.map((c) => `${c.name}.yaml`).sort(), 'one fixture per case, one case per fixture')
  const codes = new Set<string>()
  for (const c of INVALID_CASES) {
    const file = join(INVALID, `${c.name}.yaml`)
    const r = await loadPaths([file])
    const e = r.errors[0]
    t.equal(r.errors.length, 1, `${c.name}: one error (${r.errors.map(formatObjectError).join(' | ')})`)
    if (!e) continue
    t.equal(e.code, c.code, `${c.name}: code`)
    t.equal(e.path, c.path, `${c.name}: path`)
    t.same(e.source, { file, doc: c.doc ?? 1 }, `${c.name}: source`)
    if (c.object !== undefined) t.equal(e.object, c.object, `${c.name}: object`)
    t.ok(formatObjectError(e).startsWith(`${file} doc ${c.doc ?? 1}`), `${c.name}: line names file and doc`)
    t.ok(Object.hasOwn(CONFIG_ERROR_CODES, e.code), `${c.name}: code is in the catalogue`)
    codes.add(e.code)
  }
  t.ok(codes.size >= 15, `the table covers ${codes.size} distinct codes`)
})

t.test('formatObjectError renders file, doc, object, path and message', async (t) => {
  const text = `apiVersion: v1
kind: Service
metadata: {name: api}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  ports:
  - port: 0
`
  const r = loadManifestText(text, 'web.yaml')
  t.equal(r.errors.length, 1)
  t.equal(
    formatObjectError(r.errors[0]!),
    'web.yaml doc 2 (Service default/web): spec.ports[0].port: must be 1-65535, got 0',
  )
  t.equal(r.objects.length, 1, 'the valid document still loads')
  t.equal(
    formatObjectError({
      source: { file: 'a.yaml', doc: 3 },
      object: null,
      path: '',
      code: 'MLT_CONFIG_PARSE',
      message: 'YAML syntax error: x',
    }),
    'a.yaml doc 3: YAML syntax error: x',
  )
})

t.test('all errors of one object are collected', async (t) => {
  const r = validateDocument(
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'Bad_Name', labels: { ok: 'x', 'bad key': 'y' } },
      spec: {
        type: 'NodePort',
        clusterIP: 'None',
        ports: [{ port: 0, protocol: 'ICMP', nodePort: 1 }, { port: 80 }],
        sessionAffinity: 'Sticky',
      },
    },
    { file: 'x.yaml', doc: 1 },
  )
  t.equal(r.object, null)
  t.same(r.errors.map((e) => `${e.path} ${e.code}`).sort(), [
    'metadata.labels[bad key] MLT_CONFIG_INVALID_NAME',
    'metadata.name MLT_CONFIG_INVALID_NAME',
    'spec.clusterIP MLT_CONFIG_FORBIDDEN',
    'spec.ports[0].name MLT_CONFIG_REQUIRED',
    'spec.ports[0].nodePort MLT_CONFIG_RANGE',
    'spec.ports[0].port MLT_CONFIG_RANGE',
    'spec.ports[0].protocol MLT_CONFIG_ENUM',
    'spec.ports[1].name MLT_CONFIG_REQUIRED',
    'spec.sessionAffinity MLT_CONFIG_ENUM',
  ])
  t.ok(r.errors.every((e) => e.object === 'Service default/Bad_Name'))
  t.equal(r.id, 'Service default/Bad_Name', 'identity known even though invalid (last-good key)')
})

t.test('documents without identity, unknown kinds, non-maps', async (t) => {
  const src = { file: 'x.yaml', doc: 4 }
  const unknown = validateDocument({ apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'd' } }, src)
  t.same(unknown, { object: null, errors: [], ignoredKind: 'apps/v1 Deployment', id: null })
  const noMeta = validateDocument({ apiVersion: 'v1', kind: 'Node' }, src)
  t.same(
    noMeta.errors.map((e) => [e.object, e.path, e.code]),
    [['Node', 'metadata.name', 'MLT_CONFIG_REQUIRED']],
  )
  t.equal(noMeta.id, null)
  const scalar = validateDocument('hello', src)
  t.same(
    scalar.errors.map((e) => [e.object, e.path, e.code]),
    [[null, '', 'MLT_CONFIG_TYPE']],
  )
  const prefixed = validateDocument(
    { apiVersion: 'v1', kind: 'Service', metadata: { name: 'a' }, spec: { ports: [{ port: -1 }] } },
    src,
    'items[2]',
  )
  t.equal(prefixed.errors[0]?.path, 'items[2].spec.ports[0].port')
})

function byName<T extends KubeObject>(objects: readonly KubeObject[], kind: T['kind'], ns: string, name: string): T {
  const o = objects.find((x) => x.kind === kind && x.meta.namespace === ns && x.meta.name === name)
  if (!o) throw new Error(`${kind} ${ns}/${name} not loaded`)
  return o as T
}

t.test('valid fixtures load with Kubernetes defaults', async (t) => {
  const r = await loadPaths([VALID])
  t.same(r.errors, [], 'no errors')
  t.same(r.ignoredKinds, ['apps/v1 Deployment'])
  const o = r.objects

  const web = byName<Service>(o, 'Service', 'default', 'web')
  t.same(web.meta, {
    name: 'web',
    namespace: 'default',
    labels: {},
    annotations: {},
    deletionTimestamp: null,
    source: { file: join(VALID, 'service-defaults.yaml'), doc: 1 },
  })
  t.same(web.spec, {
    type: 'ClusterIP',
    selector: { app: 'web' },
    clusterIPs: [],
    headless: false,
    ipFamilies: [],
    ipFamilyPolicy: 'SingleStack',
    ports: [{ name: '', protocol: 'TCP', port: 80, targetPort: 80, nodePort: null, appProtocol: null }],
    externalName: null,
    externalIPs: [],
    sessionAffinity: 'None',
    affinityTimeoutSeconds: 10800,
    externalTrafficPolicy: 'Cluster',
    internalTrafficPolicy: 'Cluster',
    trafficDistribution: null,
    publishNotReadyAddresses: false,
    healthCheckNodePort: null,
    loadBalancerIP: null,
    loadBalancerClass: null,
  })

  const api = byName<Service>(o, 'Service', 'shop', 'api')
  t.equal(api.meta.source.doc, 1, 'a leading "---" after a comment does not count as a document')
  t.same(api.spec.clusterIPs, ['10.96.0.20'])
  t.same(
    api.spec.ports.map((p) => [p.name, p.protocol, p.port, p.targetPort, p.nodePort]),
    [
      ['http', 'TCP', 80, 'http', 30080],
      ['dns', 'UDP', 53, 5353, null],
    ],
  )
  t.equal(api.spec.sessionAffinity, 'ClientIP')
  t.equal(api.spec.affinityTimeoutSeconds, 60)
  t.equal(api.spec.externalTrafficPolicy, 'Local')
  t.equal(api.spec.internalTrafficPolicy, 'Local')
  t.equal(api.spec.trafficDistribution, 'PreferClose')

  const db = byName<Service>(o, 'Service', 'shop', 'db')
  t.equal(db.spec.headless, true)
  t.same(db.spec.clusterIPs, [])
  t.same(db.spec.ports, [], 'a headless Service may have no ports')
  t.equal(db.spec.publishNotReadyAddresses, true)

  const search = byName<Service>(o, 'Service', 'shop', 'search')
  t.equal(search.spec.type, 'ExternalName')
  t.equal(search.spec.externalName, 'search.example.com', 'trailing dot dropped')
  t.equal(search.spec.selector, null)

  const front = byName<Service>(o, 'Service', 'shop', 'front')
  t.same(front.spec.clusterIPs, ['10.96.0.30', 'fd00::30'])
  t.equal(front.spec.ipFamilyPolicy, 'PreferDualStack')
  t.equal(front.spec.healthCheckNodePort, 32000)
  t.equal(front.spec.ports[0]?.appProtocol, 'https')
  t.equal(front.meta.annotations['metallb.io/address-pool'], 'public')
  t.equal(
    byName<Service>(o, 'Service', 'shop', 'legacy').spec.ports[0]?.targetPort,
    8080,
    'targetPort 0 defaults to port',
  )

  const pod = byName<Pod>(o, 'Pod', 'shop', 'api-1')
  t.same(pod.spec.nodeName, 'node-a')
  t.same(pod.spec.hostname, 'api-1')
  t.same(pod.spec.subdomain, 'api')
  t.same(pod.status, { podIP: '127.0.0.10', podIPs: ['127.0.0.10', '::1'] }, 'loopback accepted, podIP first')
  const [app, sidecar] = pod.spec.containers
  t.same(app?.readinessProbe, {
    handler: { type: 'httpGet', scheme: 'HTTP', host: null, path: '/', port: 8080, httpHeaders: [] },
    initialDelaySeconds: 0,
    periodSeconds: 10,
    timeoutSeconds: 1,
    successThreshold: 1,
    failureThreshold: 3,
  })
  t.same(
    app?.livenessProbe,
    {
      handler: { type: 'tcpSocket', host: null, port: 9090 },
      initialDelaySeconds: 0,
      periodSeconds: 10,
      timeoutSeconds: 1,
      successThreshold: 1,
      failureThreshold: 5,
    },
    'named port resolved in its own container; periodSeconds 0 takes the default as the API server does',
  )
  t.same(app?.startupProbe?.handler, { type: 'exec', command: ['true'] })
  t.equal(app?.startupProbe?.initialDelaySeconds, 2)
  t.same(sidecar?.ports, [{ name: null, containerPort: 5353, protocol: 'UDP' }])
  t.same(sidecar?.readinessProbe, {
    handler: {
      type: 'httpGet',
      scheme: 'HTTPS',
      host: '127.0.0.1',
      path: '/healthz',
      port: 5353,
      httpHeaders: [{ name: 'X-Probe', value: 'meshlet' }],
    },
    initialDelaySeconds: 0,
    periodSeconds: 10,
    timeoutSeconds: 3,
    successThreshold: 2,
    failureThreshold: 3,
  })
  const pod2 = byName<Pod>(o, 'Pod', 'shop', 'api-2')
  t.same(pod2.status, { podIP: '127.0.0.11', podIPs: ['127.0.0.11'] }, 'podIP from podIPs[0]')
  t.equal(pod2.meta.deletionTimestamp, '2025-01-01T00:00:00Z')
  t.same(pod2.spec.containers[0]?.readinessProbe?.handler, { type: 'grpc', port: 8080, service: '' })

  const eps = byName<Endpoints>(o, 'Endpoints', 'shop', 'external-db')
  t.same(eps.subsets[0]?.addresses, [
    {
      ip: '127.0.0.20',
      hostname: 'db-0',
      nodeName: 'node-a',
      targetRef: { kind: 'Pod', namespace: 'shop', name: 'db-0' },
    },
  ])
  t.same(
    eps.subsets[0]?.notReadyAddresses.map((a) => a.ip),
    ['127.0.0.21'],
  )
  t.same(eps.subsets[0]?.ports, [
    { name: 'pg', port: 5432, protocol: 'TCP', appProtocol: null },
    { name: 'metrics', port: 9187, protocol: 'TCP', appProtocol: null },
  ])

  const slice = byName<EndpointSlice>(o, 'EndpointSlice', 'shop', 'external-cache-abc')
  t.equal(slice.serviceName, 'external-cache', 'from the kubernetes.io/service-name label')
  t.equal(slice.addressType, 'IPv4')
  t.same(
    slice.endpoints[0]?.conditions,
    { ready: true, serving: null, terminating: null },
    'absent conditions stay null',
  )
  t.same(slice.endpoints[0]?.hints, { forZones: ['zone-a'], forNodes: [] })
  t.equal(slice.endpoints[0]?.zone, 'zone-a')
  t.same(slice.endpoints[1]?.conditions, { ready: false, serving: true, terminating: true })

  const cls = byName<IngressClass>(o, 'IngressClass', '', 'meshlet')
  t.same([cls.controller, cls.isDefault, cls.meta.namespace], ['meshlet.dev/ingress', true, ''])
  const ing = byName<Ingress>(o, 'Ingress', 'shop', 'shop')
  t.equal(ing.spec.ingressClassName, null)
  t.same(ing.spec.tls, [{ hosts: ['shop.example.com', '*.shop.example.com'], secretName: 'shop-tls' }])
  t.same(ing.spec.defaultBackend, { service: { name: 'front', port: { number: 443, name: null } } })
  t.same(ing.spec.rules[0], {
    host: 'shop.example.com',
    paths: [
      { path: '/api', pathType: 'Prefix', backend: { service: { name: 'api', port: { number: null, name: 'http' } } } },
      { path: '/exact', pathType: 'Exact', backend: { service: { name: 'api', port: { number: 80, name: null } } } },
    ],
  })
  t.same(ing.spec.rules[1]?.paths[0]?.path, '/', 'an empty ImplementationSpecific path reads as "/"')
  t.equal(
    byName<Ingress>(o, 'Ingress', 'shop', 'legacy-class').spec.ingressClassName,
    'nginx',
    'the deprecated class annotation',
  )

  const pemCert = readFileSync(join(VALID, 'secrets.yaml'), 'utf8').includes('tls.crt: |')
  t.ok(pemCert)
  const tlsData = byName<Secret>(o, 'Secret', 'shop', 'shop-tls')
  const tlsString = byName<Secret>(o, 'Secret', 'shop', 'front-tls')
  t.match(tlsData.tls?.cert, /^-----BEGIN CERTIFICATE-----/, 'data decoded from base64')
  t.match(tlsData.tls?.key, /-----BEGIN PRIVATE KEY-----/)
  t.equal(tlsString.tls?.cert, tlsData.tls?.cert, 'stringData gives the same PEM')
  t.same(
    [byName<Secret>(o, 'Secret', 'shop', 'opaque').type, byName<Secret>(o, 'Secret', 'shop', 'opaque').tls],
    ['Opaque', null],
  )

  const node = byName<Node>(o, 'Node', '', 'node-a')
  t.equal(node.zone, 'zone-a')
  t.same(node.addresses, [
    { type: 'InternalIP', address: '198.18.0.1' },
    { type: 'Hostname', address: 'node-a' },
  ])
  const pool = byName<IPAddressPool>(o, 'IPAddressPool', 'metallb-system', 'public')
  t.same(pool.addresses, ['198.18.10.0/24', '198.18.11.5-198.18.11.9', 'fc00::/124'])
  t.same([pool.autoAssign, pool.avoidBuggyIPs], [true, true])
  t.same(pool.serviceAllocation, {
    priority: 10,
    namespaces: ['shop'],
    namespaceSelectors: [],
    serviceSelectors: [{ matchLabels: { exposed: 'true' }, matchExpressions: [] }],
  })
  const l2 = byName<L2Advertisement>(o, 'L2Advertisement', 'metallb-system', 'public')
  t.same(l2, {
    kind: 'L2Advertisement',
    meta: l2.meta,
    ipAddressPools: ['public'],
    ipAddressPoolSelectors: [],
    nodeSelectors: [
      { matchLabels: {}, matchExpressions: [{ key: 'kubernetes.io/hostname', operator: 'In', values: ['node-a'] }] },
    ],
    interfaces: ['eth0'],
  })

  // Objects are plain data: what the Snapshot promises (structured-cloneable).
  t.same(structuredClone(o), o)
})

t.test('defaults from a JSON object and ipFamilies', async (t) => {
  const r = validateDocument(
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'dual', namespace: 'ns1' },
      spec: { ipFamilies: ['IPv6', 'IPv4'], ports: [{ port: 53, protocol: 'UDP', name: 'dns' }] },
    },
    { file: 'x.json', doc: 1 },
  )
  t.same(r.errors, [])
  const s = r.object as Service
  t.same([s.spec.ipFamilies, s.spec.ipFamilyPolicy], [['IPv6', 'IPv4'], 'RequireDualStack'])
})
