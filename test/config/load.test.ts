// config/load.ts: multi-document YAML, JSON, List kinds, directories, unreadable paths, duplicate objects.

import t from 'tap'
import { join } from 'node:path'
import { loadManifestText, loadPaths } from '../../config/load.ts'
import { formatObjectError } from '../../model/validate.ts'
import { MeshletError } from '../../model/errors.ts'
import type { Service } from '../../model/objects.ts'

const svc = (name: string, port = 80, ns = 'default') =>
  `apiVersion: v1\nkind: Service\nmetadata:\n  name: ${name}\n  namespace: ${ns}\nspec:\n  ports:\n  - port: ${port}\n`

t.test('multi-document YAML: empty documents skipped, numbering follows the file', async (t) => {
  const text = `---\n${svc('a')}---\n---\n# only a comment\n---\n${svc('b', 0)}---\n${svc('c')}`
  const r = loadManifestText(text, 'multi.yaml')
  t.same(
    r.objects.map((o) => `${o.meta.name}@${o.meta.source.doc}`),
    ['a@1', 'c@5'],
  )
  t.same(r.errors.map(formatObjectError), [
    'multi.yaml doc 4 (Service default/b): spec.ports[0].port: must be 1-65535, got 0',
  ])
  t.same(r.files, ['multi.yaml'])
})

t.test('a YAML syntax error names file, document and line; other documents still load', async (t) => {
  const text = `${svc('a')}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: [oops\n---\n${svc('c')}`
  const r = loadManifestText(text, 'broken.yaml')
  t.same(
    r.objects.map((o) => o.meta.name),
    ['a', 'c'],
  )
  t.equal(r.errors.length, 1)
  const e = r.errors[0]!
  t.equal(e.code, 'MLT_CONFIG_PARSE')
  t.same(e.source, { file: 'broken.yaml', doc: 2 })
  t.match(formatObjectError(e), /^broken\.yaml doc 2: YAML syntax error: .* at line \d+, column \d+$/)
})

t.test('duplicate keys and tabs are syntax errors', async (t) => {
  const r = loadManifestText('apiVersion: v1\nkind: Service\nkind: Pod\nmetadata: {name: x}\n', 'dup.yaml')
  t.same(
    r.errors.map((e) => e.code),
    ['MLT_CONFIG_PARSE'],
  )
})

t.test('List and typed lists: items validated with items[i] paths', async (t) => {
  const text = `apiVersion: v1
kind: List
items:
- ${svc('one').split('\n').join('\n  ')}
- apiVersion: v1
  kind: Service
  metadata: {name: two}
  spec: {ports: [{port: 99999}]}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: skip}
`
  const r = loadManifestText(text, 'list.yaml')
  t.same(
    r.objects.map((o) => o.meta.name),
    ['one'],
  )
  t.same(r.errors.map(formatObjectError), [
    'list.yaml doc 1 (Service default/two): items[1].spec.ports[0].port: must be 1-65535, got 99999',
  ])
  t.same(r.ignoredKinds, ['apps/v1 Deployment'])

  const typed = loadManifestText(
    `apiVersion: v1\nkind: PodList\nitems:\n- metadata: {name: p}\n  spec: {containers: [{name: c}]}\n`,
    'pods.yaml',
  )
  t.same(typed.errors, [])
  t.same(
    typed.objects.map((o) => `${o.kind} ${o.meta.name}`),
    ['Pod p'],
    'item kind taken from the list kind',
  )
})

t.test('JSON files: parsed as JSON, syntax errors reported', async (t) => {
  const dir = t.testdir({
    'svc.json': JSON.stringify({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'j' },
      spec: { ports: [{ port: 8080 }] },
    }),
    'bad.json': '{"apiVersion": "v1", "kind": ',
  })
  const r = await loadPaths([join(dir, 'svc.json'), join(dir, 'bad.json')])
  t.same(
    r.objects.map((o) => o.meta.name),
    ['j'],
  )
  t.equal(r.errors.length, 1)
  t.equal(r.errors[0]?.code, 'MLT_CONFIG_PARSE')
  t.match(formatObjectError(r.errors[0]!), new RegExp(`^${join(dir, 'bad.json')} doc 1: JSON syntax error: `))
  // JSON is YAML too: JSON text without a .json name loads the same way.
  t.same(
    loadManifestText(
      JSON.stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'k' }, spec: { ports: [{ port: 1 }] } }),
      'x',
    ).errors,
    [],
  )
})

t.test('directories: recursive, sorted, manifest extensions only, dot-entries skipped', async (t) => {
  const dir = t.testdir({
    'b.yaml': svc('b'),
    'a.yml': svc('a'),
    'notes.txt': 'not a manifest',
    '.hidden.yaml': svc('hidden'),
    '..data': { 'x.yaml': svc('configmap-link') },
    sub: {
      'c.json': JSON.stringify({
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'c' },
        spec: { ports: [{ port: 1 }] },
      }),
      deeper: { 'd.yaml': svc('d') },
    },
    'e.YAML': svc('e'),
  })
  const r = await loadPaths([dir])
  t.same(r.errors, [])
  t.same(r.files, [
    join(dir, 'a.yml'),
    join(dir, 'b.yaml'),
    join(dir, 'e.YAML'),
    join(dir, 'sub', 'c.json'),
    join(dir, 'sub', 'deeper', 'd.yaml'),
  ])
  t.same(
    r.objects.map((o) => o.meta.name),
    ['a', 'b', 'e', 'c', 'd'],
  )
  // A file named explicitly is read whatever its extension; the same file twice is read once.
  const r2 = await loadPaths([join(dir, 'b.yaml'), join(dir, 'notes.txt'), join(dir, 'b.yaml')])
  t.same(r2.files, [join(dir, 'b.yaml'), join(dir, 'notes.txt')])
  t.equal(r2.errors[0]?.code, 'MLT_CONFIG_TYPE', 'a text file is one scalar document, not an object')
})

t.test('a path that cannot be read throws MLT_CONFIG_UNREADABLE', async (t) => {
  const dir = t.testdir({ 'ok.yaml': svc('ok') })
  const missing = join(dir, 'nope.yaml')
  await t.rejects(loadPaths([join(dir, 'ok.yaml'), missing]), {
    code: 'MLT_CONFIG_UNREADABLE',
    message: `cannot read ${missing}: ENOENT`,
  })
  try {
    await loadPaths([missing])
    t.fail('should throw')
  } catch (err) {
    t.ok(err instanceof MeshletError)
  }
})

t.test('the same object twice: the second is an error naming both places', async (t) => {
  const dir = t.testdir({
    'a.yaml': svc('web') + '---\n' + svc('web', 81, 'other'),
    'b.yaml': svc('api') + '---\n' + svc('web', 82),
  })
  const r = await loadPaths([dir])
  t.same(
    r.objects.map((o) => `${o.meta.namespace}/${o.meta.name}:${(o as Service).spec.ports[0]?.port}`),
    ['default/web:80', 'other/web:81', 'default/api:80'],
    'first definition wins; namespaces distinguish',
  )
  t.same(r.errors.map(formatObjectError), [
    `${join(dir, 'b.yaml')} doc 2 (Service default/web): defined twice: already defined in ${join(dir, 'a.yaml')} doc 1; this definition is ignored`,
  ])
  t.equal(r.errors[0]?.code, 'MLT_CONFIG_CONFLICT')
  // Different kinds may share a name.
  const k = loadManifestText(
    svc('x') + '---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: x}\nsubsets: []\n',
    'k.yaml',
  )
  t.same(k.errors, [])
  t.equal(k.objects.length, 2)
})
