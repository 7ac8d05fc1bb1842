// Validation of Deployments with meshlet.io/replicas-from-dns (model/validate-deployment.ts): one fixture per error
// (test/fixtures/compose/invalid/NAME.yaml → field path and code), the valid shapes, and Deployments without the
// annotation left alone as an ignored kind.

import t from 'tap'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { loadManifestText } from '../../config/load.ts'
import type { Deployment } from '../../model/objects.ts'

const INVALID = fileURLToPath(new URL('../fixtures/compose/invalid/', import.meta.url))

const CASES: Record<string, [path: string, code: string]> = {
  'deployment-selector-missing': ['spec.selector', 'MLT_CONFIG_REQUIRED'],
  'deployment-selector-empty': ['spec.selector', 'MLT_CONFIG_REQUIRED'],
  'deployment-selector-mismatch': ['spec.template.metadata.labels', 'MLT_CONFIG_MISMATCH'],
  'deployment-selector-expression-mismatch': ['spec.template.metadata.labels', 'MLT_CONFIG_MISMATCH'],
  'deployment-dns-name-invalid': ['metadata.annotations[meshlet.io/replicas-from-dns]', 'MLT_CONFIG_INVALID_NAME'],
  'deployment-dns-name-address': ['metadata.annotations[meshlet.io/replicas-from-dns]', 'MLT_CONFIG_INVALID_NAME'],
  'deployment-dns-name-empty': ['metadata.annotations[meshlet.io/replicas-from-dns]', 'MLT_CONFIG_INVALID_NAME'],
  'deployment-interval-zero': ['metadata.annotations[meshlet.io/resolve-interval-seconds]', 'MLT_CONFIG_RANGE'],
  'deployment-interval-not-number': ['metadata.annotations[meshlet.io/resolve-interval-seconds]', 'MLT_CONFIG_RANGE'],
  'deployment-template-missing': ['spec.template', 'MLT_CONFIG_REQUIRED'],
  'deployment-containers-missing': ['spec.template.spec.containers', 'MLT_CONFIG_REQUIRED'],
  'deployment-probe-unknown-port': [
    'spec.template.spec.containers[0].readinessProbe.httpGet.port',
    'MLT_CONFIG_UNKNOWN_PORT',
  ],
  'deployment-replicas-negative': ['spec.replicas', 'MLT_CONFIG_RANGE'],
  'deployment-template-status': ['spec.template.status', 'MLT_CONFIG_FORBIDDEN'],
  'deployment-template-label-invalid': ['spec.template.metadata.labels[bad key]', 'MLT_CONFIG_INVALID_NAME'],
  'deployment-api-version': ['apiVersion', 'MLT_CONFIG_API_VERSION'],
}

for (const [name, [path, code]] of Object.entries(CASES)) {
  t.test(name, async (t) => {
    const file = `${INVALID}${name}.yaml`
    const r = loadManifestText(readFileSync(file, 'utf8'), file)
    t.same(r.objects, [], 'the invalid Deployment is not loaded')
    t.same(
      r.errors.map((e) => [e.path, e.code]),
      [[path, code]],
    )
    t.equal(r.errors[0]?.object, 'Deployment default/web')
  })
}

const valid = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: cache
  namespace: data
  annotations:
    meshlet.io/replicas-from-dns: my_project-cache.
    meshlet.io/resolve-interval-seconds: "30"
spec:
  selector:
    matchLabels: {app: cache}
    matchExpressions: [{key: tier, operator: NotIn, values: [front]}, {key: legacy, operator: DoesNotExist}]
  template:
    metadata:
      labels: {app: cache, tier: back}
      annotations: {note: "x"}
    spec:
      nodeName: node-b
      containers:
      - name: redis
        ports: [{name: redis, containerPort: 6379}]
        livenessProbe:
          tcpSocket: {port: redis}
`

t.test('a valid Deployment: template, selector expressions, Compose-style name, interval', async (t) => {
  const r = loadManifestText(valid, 'cache.yaml')
  t.same(r.errors, [])
  const d = r.objects[0] as Deployment
  t.equal(d.kind, 'Deployment')
  t.equal(d.meta.namespace, 'data')
  t.same(
    d.discovery,
    { dnsName: 'my_project-cache', intervalSeconds: 30 },
    "'_' accepted (Compose names), trailing dot dropped",
  )
  t.equal(d.spec.replicas, null)
  t.same(d.spec.template.labels, { app: 'cache', tier: 'back' })
  t.equal(d.spec.template.spec.nodeName, 'node-b')
  t.match(d.spec.template.spec.containers[0], {
    name: 'redis',
    livenessProbe: { handler: { type: 'tcpSocket', port: 6379 } },
  })
})

t.test('interval defaults to 5 s', async (t) => {
  const r = loadManifestText(valid.replace(/\n {4}meshlet.io\/resolve-interval-seconds: "30"/, ''), 'cache.yaml')
  t.same(r.errors, [])
  t.equal((r.objects[0] as Deployment).discovery.intervalSeconds, 5)
})

t.test('a Deployment without the annotation is an ignored kind, not validated', async (t) => {
  const r = loadManifestText(
    'apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x, annotations: {other: y}}\nspec: {}\n',
    'x.yaml',
  )
  t.same(r.errors, [])
  t.same(r.objects, [])
  t.same(r.ignoredKinds, ['apps/v1 Deployment'])
})

t.test('inside a List: paths carry items[i]', async (t) => {
  const text = readFileSync(`${INVALID}deployment-probe-unknown-port.yaml`, 'utf8')
  const item = text
    .split('\n')
    .map((l) => `  ${l}`)
    .join('\n')
    .replace(/^ {2}/, '- ')
  const r = loadManifestText(`apiVersion: v1\nkind: List\nitems:\n${item}`, 'list.yaml')
  t.same(
    r.errors.map((e) => e.path),
    ['items[0].spec.template.spec.containers[0].readinessProbe.httpGet.port'],
  )
})
