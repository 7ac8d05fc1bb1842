// ingress-controller-conformance scenarios (specs/ingress.md §2.5), through a real HTTP client against the running
// router, with echo backends that report what they received.

import t from 'tap'
import {
  echoBackend,
  get,
  ingress,
  pod,
  service,
  startRouter,
  engineTest,
  type EchoBackend,
  type PathSpec,
} from './helpers.ts'
import type { KubeObject } from '../../model/objects.ts'

/** One Service + Pod per name, each Pod a live echo backend on its own loopback address. */
async function backends(names: string[]): Promise<{ objects: KubeObject[]; byName: Map<string, EchoBackend> }> {
  const objects: KubeObject[] = []
  const byName = new Map<string, EchoBackend>()
  let i = 1
  for (const n of names) {
    const ip = `127.0.${40 + (process.pid % 50)}.${i++}`
    const b = await echoBackend(t, n, ip)
    byName.set(n, b)
    objects.push(service(n), pod(`${n}-pod`, n, ip, b.port))
  }
  return { objects, byName }
}

engineTest(t, 'default_backend.feature', async (t) => {
  const { objects } = await backends(['echo-service'])
  const r = await startRouter(t, [
    ...objects,
    ingress('default-backend', [], { defaultBackend: ['echo-service', 8080] }),
  ])
  const rows: [string, string | null, string][] = [
    ['GET', 'my-host', '/'],
    ['GET', 'my-host', '/sub-path'],
    ['POST', 'some-host', '/'],
    ['PUT', null, '/resource'],
    ['DELETE', 'some-host', '/resource'],
    ['PATCH', 'my-host', '/resource'],
  ]
  for (const [method, host, path] of rows) {
    const res = await get(r, host, path, { method, headers: { 'user-agent': 'conformance/1' } })
    t.equal(res.status, 200, `${method} ${host} ${path}`)
    t.equal(res.echo?.server, 'echo-service')
    t.equal(res.echo?.method, method)
    t.equal(res.echo?.url, path)
    t.equal(res.echo?.httpVersion, '1.1')
    t.equal(res.echo?.headers['user-agent'], 'conformance/1')
    for (const h of ['content-length', 'content-type', 'date', 'server']) t.ok(res.headers[h], `response has ${h}`)
  }
})

engineTest(t, 'host_rules.feature (HTTP part; HTTPS in tls.test.ts)', async (t) => {
  const { objects } = await backends(['wildcard-foo-com', 'foo-bar-com'])
  const r = await startRouter(t, [
    ...objects,
    ingress('host-rules', [
      { host: '*.foo.com', paths: [['/', 'Prefix', 'wildcard-foo-com', 8080]] },
      { host: 'foo.bar.com', paths: [['/', 'Prefix', 'foo-bar-com', 'http']] },
    ]),
  ])
  const cases: [string, number, string | null][] = [
    ['foo.bar.com', 200, 'foo-bar-com'],
    ['subdomain.bar.com', 404, null],
    ['bar.foo.com', 200, 'wildcard-foo-com'],
    ['baz.bar.foo.com', 404, null],
    ['foo.com', 404, null],
  ]
  for (const [host, status, server] of cases) {
    const res = await get(r, host, '/')
    t.equal(res.status, status, host)
    if (server) {
      t.equal(res.echo?.server, server)
      t.equal(res.echo?.headers.host, host, 'request host arrives unchanged')
    }
  }
})

engineTest(t, 'ingress_class.feature', async (t) => {
  const { objects } = await backends(['echo-service'])
  const r = await startRouter(t, [
    ...objects,
    ingress('ingress-class', [{ host: 'ingress-class', paths: [['/', 'Prefix', 'echo-service']] }], {
      className: 'some-invalid-class-name',
    }),
  ])
  const res = await get(r, 'ingress-class', '/')
  t.equal(res.status, 404)
  const st = r.status()
  const ing = st.ingresses.find((i) => i.ingress === 'default/ingress-class')
  t.equal(ing?.state, 'ignored')
  t.match(ing?.reasons[0], /some-invalid-class-name/)
})

engineTest(t, 'load_balancing.feature: 10 replicas, 100 requests, 10 distinct pods', async (t) => {
  const objects: KubeObject[] = [service('echo-service')]
  const base = 40 + (process.pid % 50)
  for (let i = 1; i <= 10; i++) {
    const ip = `127.1.${base}.${i}`
    const b = await echoBackend(t, `replica-${i}`, ip)
    objects.push(pod(`echo-${i}`, 'echo-service', ip, b.port))
  }
  const r = await startRouter(t, [...objects, ingress('lb', [], { defaultBackend: ['echo-service', 8080] })])
  const seen = new Set<string>()
  for (let i = 0; i < 100; i++) {
    const res = await get(r, 'lb', '/')
    t.equal(res.status, 200)
    seen.add(res.echo!.server)
  }
  t.equal(seen.size, 10)
})

engineTest(t, 'path_rules.feature', async (t) => {
  const names = [
    'foo-exact',
    'foo-prefix',
    'aaa-slash-bbb-prefix',
    'aaa-prefix',
    'aaa-slash-bbb-slash-prefix',
    'foo-slash-exact',
  ]
  const { objects } = await backends(names)
  const rule = (host: string, paths: PathSpec[]) => ({ host, paths })
  const r = await startRouter(t, [
    ...objects,
    ingress('path-rules', [
      rule('exact-path-rules', [['/foo', 'Exact', 'foo-exact']]),
      rule('prefix-path-rules', [
        ['/foo', 'Prefix', 'foo-prefix'],
        ['/aaa/bbb', 'Prefix', 'aaa-slash-bbb-prefix'],
        ['/aaa', 'Prefix', 'aaa-prefix'],
      ]),
      rule('mixed-path-rules', [
        ['/foo', 'Prefix', 'foo-prefix'],
        ['/foo', 'Exact', 'foo-exact'],
      ]),
      rule('trailing-slash-path-rules', [
        ['/aaa/bbb/', 'Prefix', 'aaa-slash-bbb-slash-prefix'],
        ['/foo/', 'Exact', 'foo-slash-exact'],
      ]),
    ]),
  ])
  const rows: [string, string, string | 404][] = [
    ['exact-path-rules', '/foo', 'foo-exact'],
    ['exact-path-rules', '/foo/', 404],
    ['exact-path-rules', '/FOO', 404],
    ['exact-path-rules', '/bar', 404],
    ['prefix-path-rules', '/foo', 'foo-prefix'],
    ['prefix-path-rules', '/foo/', 'foo-prefix'],
    ['prefix-path-rules', '/FOO', 404],
    ['prefix-path-rules', '/aaa/bbb', 'aaa-slash-bbb-prefix'],
    ['prefix-path-rules', '/aaa/bbb/ccc', 'aaa-slash-bbb-prefix'],
    ['prefix-path-rules', '/aaa/ccc', 'aaa-prefix'],
    ['prefix-path-rules', '/aaaccc', 404],
    ['mixed-path-rules', '/foo', 'foo-exact'],
    ['trailing-slash-path-rules', '/aaa/bbb', 'aaa-slash-bbb-slash-prefix'],
    ['trailing-slash-path-rules', '/aaa/bbb/', 'aaa-slash-bbb-slash-prefix'],
    ['trailing-slash-path-rules', '/foo', 404],
  ]
  for (const [host, path, want] of rows) {
    const res = await get(r, host, path)
    if (want === 404) t.equal(res.status, 404, `${host}${path} → 404`)
    else {
      t.equal(res.status, 200, `${host}${path} → ${want}`)
      t.equal(res.echo?.server, want, `${host}${path} → ${want}`)
      t.equal(res.echo?.url, path, 'path arrives unchanged (no redirect, no rewrite)')
    }
  }
})
