// Manifest limits (issue 13 item 11): each limit gives an MLT_CONFIG_LIMIT error naming the file, the document, the
// field and the limit, and each is checked before the work it bounds (so the load stays fast).

import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { loadManifestText, loadPaths } from '../../config/load.ts'
import { MANIFEST_LIMITS } from '../../model/validate-common.ts'
import { formatObjectError } from '../../model/validate.ts'

function timed<T>(fn: () => T): { value: T; ms: number } {
  const start = performance.now()
  const value = fn()
  return { value, ms: performance.now() - start }
}

t.test('a Service with 10,000 ports', async (t) => {
  const ports = Array.from({ length: 10_000 }, (_, i) => `  - {name: p${i}, port: ${i + 1}}`).join('\n')
  const text = `apiVersion: v1\nkind: Service\nmetadata: {name: wide}\nspec:\n  ports:\n${ports}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: ok}\nspec:\n  ports: [{port: 80}]\n`
  const r = loadManifestText(text, 'wide.yaml')
  const e = r.errors.find((x) => x.code === 'MLT_CONFIG_LIMIT')
  t.ok(e, 'MLT_CONFIG_LIMIT')
  t.equal(
    formatObjectError(e!),
    'wide.yaml doc 1 (Service default/wide): spec.ports: at most 100 ports per Service (as many as an EndpointSlice holds), got 10000',
  )
  t.same(
    r.objects.map((o) => o.meta.name),
    ['ok'],
    'the other document still loads',
  )
  const at = loadManifestText(
    `apiVersion: v1\nkind: Service\nmetadata: {name: edge}\nspec:\n  ports:\n${Array.from({ length: 100 }, (_, i) => `  - {name: p${i}, port: ${i + 1}}`).join('\n')}\n`,
    'edge.yaml',
  )
  t.same(at.errors, [], 'exactly 100 ports is allowed')
})

t.test('an Ingress with 2,000 paths', async (t) => {
  const paths = Array.from(
    { length: 2000 },
    (_, i) => `      - {path: /p${i}, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}`,
  ).join('\n')
  const text = `apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: many}\nspec:\n  rules:\n  - host: a.test\n    http:\n      paths:\n${paths}\n`
  const r = loadManifestText(text, 'many.yaml')
  t.same(r.errors.map(formatObjectError), [
    'many.yaml doc 1 (Ingress default/many): spec.rules: at most 1000 paths per Ingress (over all rules), got 2000',
  ])
})

t.test('flow nesting: 200 KB of "[" is refused before the YAML parser sees it', async (t) => {
  const { value: r, ms } = timed(() => loadManifestText(`a: ${'['.repeat(200_000)}`, 'deep.yaml'))
  t.same(
    r.errors.map((e) => [e.code, formatObjectError(e)]),
    [['MLT_CONFIG_LIMIT', `deep.yaml: line 1: nested deeper than ${MANIFEST_LIMITS.depth} levels`]],
  )
  t.ok(ms < 500, `refused in ${ms.toFixed(0)} ms (the YAML parser alone takes seconds)`)
  const json = loadManifestText(`{"a":${'['.repeat(100)}`, 'deep.json')
  t.equal(json.errors[0]?.code, 'MLT_CONFIG_LIMIT', 'JSON too')
})

t.test('block nesting deeper than the limit names the field path', async (t) => {
  let body = ''
  for (let i = 0; i < 80; i++) body += `${' '.repeat(i)}k${i}:\n`
  const r = loadManifestText(
    `apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata:\n${body.replace(/^/gm, '  ')}  end: 1\n`,
    'nest.yaml',
  )
  t.equal(r.errors.length, 1)
  t.equal(r.errors[0]!.code, 'MLT_CONFIG_LIMIT')
  t.match(
    formatObjectError(r.errors[0]!),
    /^nest\.yaml doc 1: data\.k0\.k1\.k2\.k3\.k4…: nested deeper than 64 levels$/,
  )
  // Real manifests are far from it: a List of Pods with probes and headers nests about a dozen levels.
  const pod = loadManifestText(
    `apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: p}\n  spec:\n    containers:\n    - name: c\n      readinessProbe:\n        httpGet: {port: 80, httpHeaders: [{name: X, value: y}]}\n`,
    'pod.yaml',
  )
  t.same(pod.errors, [])
})

t.test('a file over 3 MiB is refused without being read whole', async (t) => {
  const dir = t.testdir({})
  const file = join(dir, 'huge.yaml')
  const doc = `---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: "${'x'.repeat(1000)}"}\n`
  writeFileSync(file, doc.repeat(Math.ceil((20 * 1024 * 1024) / doc.length)))
  const start = performance.now()
  const r = await loadPaths([file])
  const ms = performance.now() - start
  t.same(
    r.errors.map((e) => [e.code, formatObjectError(e)]),
    [
      [
        'MLT_CONFIG_LIMIT',
        `${file}: file is 20.0 MiB: the limit is 3.0 MiB per file (the Kubernetes API server's); split it into several files`,
      ],
    ],
  )
  t.ok(ms < 500, `refused in ${ms.toFixed(0)} ms`)
  const text = loadManifestText('#'.repeat(MANIFEST_LIMITS.fileBytes + 1), 'stdin-like.yaml')
  t.equal(text.errors[0]?.code, 'MLT_CONFIG_LIMIT', 'text handed over whole (stdin) is held to the same limit')
})
