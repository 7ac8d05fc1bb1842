// The matching rules of specs/ingress.md §1.1–§1.7 as table tests over the compiled route table (no sockets: the
// table is plain data; the conformance test drives the same rules over HTTP).

import t from 'tap'
import { Registry } from 'prom-client'
import type { Ingress, KubeObject } from '../../model/objects.ts'
import { Store } from '../../model/store.ts'
import { ProxyMetrics } from '../../proxy/metrics.ts'
import { DEFAULT_PATH_OPTIONS } from '../../proxy/http/normalize.ts'
import { compile, type CompileResult } from '../../proxy/routes/compile.ts'
import { route, CONTROLLER_ID } from '../../proxy/routes/route-table.ts'
import { SecureContextCache } from '../../proxy/tls.ts'
import { EndpointRegistry } from '../../proxy/upstream.ts'
import { ingress, meta, pod, service, tlsSecret, type PathSpec } from './helpers.ts'

function build(
  objects: KubeObject[],
  lastGood: ReadonlyMap<string, Ingress> = new Map(),
  ingressClass = 'meshlet',
): CompileResult {
  const store = new Store({ nodeName: 'n', serviceCidrs: [] })
  store.setObjects(objects, [])
  const snapshot = store.flush()!
  const endpoints = new EndpointRegistry()
  const r = compile({
    snapshot,
    ingressClass,
    pathOptions: DEFAULT_PATH_OPTIONS,
    endpoints,
    metrics: new ProxyMetrics(new Registry()),
    contexts: new SecureContextCache(),
    lastGood,
  })
  void endpoints.closeAll(Date.now())
  return r
}

/** Which path of which Ingress answers; "404" when none. */
function who(r: CompileResult, host: string, path: string): string {
  const hit = route(r.table, host, path)
  if (hit === null) return '404'
  return hit.kind === 'Default'
    ? `default:${hit.backend.label}`
    : `${hit.kind} ${hit.path} → ${hit.backend.service.split('/')[1]}`
}

t.test('Kubernetes docs path table (§1.6), one Ingress per row', async (t) => {
  const rows: [PathSpec[], string, string][] = [
    [[['/', 'Prefix', 'a']], '/anything/here', 'Prefix / → a'],
    [[['/foo', 'Exact', 'a']], '/foo', 'Exact /foo → a'],
    [[['/foo', 'Exact', 'a']], '/bar', '404'],
    [[['/foo', 'Exact', 'a']], '/foo/', '404'],
    [[['/foo/', 'Exact', 'a']], '/foo', '404'],
    [[['/foo', 'Prefix', 'a']], '/foo', 'Prefix /foo → a'],
    [[['/foo', 'Prefix', 'a']], '/foo/', 'Prefix /foo → a'],
    [[['/foo/', 'Prefix', 'a']], '/foo', 'Prefix /foo/ → a'],
    [[['/foo/', 'Prefix', 'a']], '/foo/', 'Prefix /foo/ → a'],
    [[['/aaa/bb', 'Prefix', 'a']], '/aaa/bbb', '404'],
    [[['/aaa/bbb', 'Prefix', 'a']], '/aaa/bbb', 'Prefix /aaa/bbb → a'],
    [[['/aaa/bbb/', 'Prefix', 'a']], '/aaa/bbb', 'Prefix /aaa/bbb/ → a'],
    [[['/aaa/bbb', 'Prefix', 'a']], '/aaa/bbb/', 'Prefix /aaa/bbb → a'],
    [[['/aaa/bbb', 'Prefix', 'a']], '/aaa/bbb/ccc', 'Prefix /aaa/bbb → a'],
    [[['/aaa/bbb', 'Prefix', 'a']], '/aaa/bbbxyz', '404'],
    [
      [
        ['/', 'Prefix', 'a'],
        ['/aaa', 'Prefix', 'b'],
      ],
      '/aaa/ccc',
      'Prefix /aaa → b',
    ],
    [
      [
        ['/', 'Prefix', 'a'],
        ['/aaa', 'Prefix', 'b'],
        ['/aaa/bbb', 'Prefix', 'c'],
      ],
      '/aaa/bbb',
      'Prefix /aaa/bbb → c',
    ],
    [
      [
        ['/', 'Prefix', 'a'],
        ['/aaa', 'Prefix', 'b'],
        ['/aaa/bbb', 'Prefix', 'c'],
      ],
      '/ccc',
      'Prefix / → a',
    ],
    [[['/aaa', 'Prefix', 'a']], '/ccc', '404'],
    [
      [
        ['/foo', 'Prefix', 'a'],
        ['/foo', 'Exact', 'b'],
      ],
      '/foo',
      'Exact /foo → b',
    ],
    // ImplementationSpecific is element-wise Prefix in meshlet (ingress-nginx: string prefix; §1.3.3)
    [[['/v1', 'ImplementationSpecific', 'a']], '/v11', '404'],
    [[['/v1', 'ImplementationSpecific', 'a']], '/v1/x', 'Prefix /v1 → a'],
    // rule paths are normalised like requests (§1.3.2)
    [[['/%7Euser', 'Prefix', 'a']], '/~user/x', 'Prefix /%7Euser → a'],
  ]
  for (const [paths, req, want] of rows) {
    const r = build([ingress('i', [{ host: 'h', paths }])])
    t.equal(who(r, 'h', req), want, `${JSON.stringify(paths)} ${req}`)
  }
})

t.test('hosts: exact, one-label wildcard, catch-all, no fall-through (§1.5)', async (t) => {
  const r = build([
    ingress('a', [
      { host: 'foo.example.com', paths: [['/only', 'Prefix', 'exact']] },
      { host: '*.example.com', paths: [['/', 'Prefix', 'wild']] },
      {
        host: null,
        paths: [
          ['/', 'Prefix', 'catchall'],
          ['/only', 'Prefix', 'catchall-only'],
        ],
      },
      { host: 'empty.example.com', paths: [] },
    ]),
    ingress('b', [], { defaultBackend: ['dflt', 80] }),
  ])
  const rows: [string, string, string][] = [
    ['foo.example.com', '/only/x', 'Prefix /only → exact'],
    ['foo.example.com', '/other', 'default:default/dflt:80'], // no fall-through to the wildcard or catch-all
    ['bar.example.com', '/x', 'Prefix / → wild'],
    ['baz.bar.example.com', '/x', 'Prefix / → catchall'], // one label only
    ['example.com', '/x', 'Prefix / → catchall'],
    ['other.org', '/only', 'Prefix /only → catchall-only'],
    ['', '/x', 'Prefix / → catchall'],
    ['empty.example.com', '/x', 'default:default/dflt:80'], // a rule without paths: default backend (§1.3.9)
  ]
  for (const [host, path, want] of rows) t.equal(who(r, host, path), want, `${host}${path}`)
})

t.test('Kubernetes docs wildcard table', async (t) => {
  const r = build([ingress('w', [{ host: '*.foo.com', paths: [['/', 'Prefix', 's']] }])])
  t.equal(who(r, 'bar.foo.com', '/'), 'Prefix / → s')
  t.equal(who(r, 'baz.bar.foo.com', '/'), '404')
  t.equal(who(r, 'foo.com', '/'), '404')
})

t.test('several Ingresses merge per host; conflicts keep the first by namespace/name (§1.3.5-6)', async (t) => {
  const r = build([
    ingress('b-second', [
      {
        host: 'h',
        paths: [
          ['/x', 'Prefix', 'second'],
          ['/y', 'Prefix', 'y'],
        ],
      },
    ]),
    ingress('a-first', [{ host: 'h', paths: [['/x', 'Prefix', 'first']] }]),
    ingress('c', [{ host: 'h', paths: [['/z', 'Prefix', 'noslash']] }]),
    ingress('d', [{ host: 'h', paths: [['/z/', 'Prefix', 'slash']] }]),
  ])
  t.equal(who(r, 'h', '/x'), 'Prefix /x → first')
  t.equal(who(r, 'h', '/y'), 'Prefix /y → y')
  t.equal(who(r, 'h', '/z'), 'Prefix /z/ → slash', '/foo/ beats /foo')
  t.equal(r.conflicts.length, 2)
  t.match(r.conflicts.join('\n'), /default\/b-second: Prefix h\/x loses to default\/a-first/)
})

t.test('default backend: the first Ingress declaring one; conflicts reported (§1.3.8)', async (t) => {
  const r = build([
    ingress('z', [], { defaultBackend: ['late', 80] }),
    ingress('a', [{ host: 'h', paths: [['/', 'Prefix', 's']] }], { defaultBackend: ['early', 80] }),
  ])
  t.equal(who(r, 'nohost', '/x'), 'default:default/early:80')
  t.match(r.conflicts[0], /default\/z loses to default\/a/)
})

t.test('regex paths (use-regex) are scoped to their Ingress and compete by match length', async (t) => {
  const r = build([
    ingress('re', [{ host: 'h', paths: [['/api/v[0-9]+/items', 'ImplementationSpecific', 'regex']] }], {
      annotations: { 'nginx.ingress.kubernetes.io/use-regex': 'true' },
    }),
    ingress('plain', [
      {
        host: 'h',
        paths: [
          ['/api', 'Prefix', 'prefix'],
          ['/API/V1/[a-z]', 'ImplementationSpecific', 'literal'],
        ],
      },
    ]),
  ])
  t.equal(who(r, 'h', '/api/v2/items/7'), 'Regex /api/v[0-9]+/items → regex')
  t.equal(who(r, 'h', '/API/V3/ITEMS'), 'Regex /api/v[0-9]+/items → regex', 'case-insensitive')
  t.equal(who(r, 'h', '/api/other'), 'Prefix /api → prefix')
})

t.test('ingress class selection (§1.1)', async (t) => {
  const ic = (name: string, controller: string, isDefault: boolean): KubeObject => ({
    kind: 'IngressClass',
    meta: meta(name, ''),
    controller,
    isDefault,
  })
  const ing = (name: string, cls: string | null) =>
    ingress(name, [{ host: name, paths: [['/', 'Prefix', 's']] }], { className: cls })
  let r = build([ing('mine', 'meshlet'), ing('other', 'nginx'), ing('none', null)])
  const state = (res: CompileResult, n: string) => res.ingresses.find((i) => i.ingress === `default/${n}`)!.state
  t.equal(state(r, 'mine'), 'accepted')
  t.equal(state(r, 'other'), 'ignored')
  t.equal(state(r, 'none'), 'accepted', 'no IngressClass objects: class-less Ingresses are meshlet’s')
  t.match(r.notes[0], /no IngressClass/)

  r = build([
    ic('nginx', 'k8s.io/ingress-nginx', true),
    ing('none', null),
    ing('viaclass', 'custom'),
    ic('custom', CONTROLLER_ID, false),
  ])
  t.equal(state(r, 'none'), 'ignored', 'the default class is not meshlet')
  t.equal(state(r, 'viaclass'), 'accepted', 'an IngressClass with meshlet’s controller')

  r = build([ic('mesh', CONTROLLER_ID, true), ing('none', null)])
  t.equal(state(r, 'none'), 'accepted', 'the default class is meshlet')

  r = build([ing('mine', 'edge')], new Map(), 'edge')
  t.equal(state(r, 'mine'), 'accepted', '--ingress-class')
})

t.test('per-Ingress validation rejects one Ingress, keeps the others (§1.2)', async (t) => {
  const bad: [string, Ingress, RegExp][] = [
    ['dotdot', ingress('x', [{ host: 'h', paths: [['/a/../b', 'Prefix', 's']] }]), /must not contain '\/\.\.\/'/],
    ['double slash', ingress('x', [{ host: 'h', paths: [['/a//b', 'Exact', 's']] }]), /must not contain '\/\/'/],
    ['%2F', ingress('x', [{ host: 'h', paths: [['/a%2Fb', 'Prefix', 's']] }]), /%2F/],
    ['relative', ingress('x', [{ host: 'h', paths: [['a', 'Prefix', 's']] }]), /absolute path/],
    ['impl relative', ingress('x', [{ host: 'h', paths: [['a', 'ImplementationSpecific', 's']] }]), /must start with/],
    ['ends /.', ingress('x', [{ host: 'h', paths: [['/a/.', 'Prefix', 's']] }]), /must not end/],
    ['bad host', ingress('x', [{ host: 'Bad_Host', paths: [['/', 'Prefix', 's']] }]), /DNS-1123 subdomain/],
    ['ip host', ingress('x', [{ host: '10.0.0.1', paths: [['/', 'Prefix', 's']] }]), /not an IP/],
    ['star alone', ingress('x', [{ host: '*', paths: [['/', 'Prefix', 's']] }]), /wildcard|DNS-1123/],
    ['inner star', ingress('x', [{ host: 'a.*.com', paths: [['/', 'Prefix', 's']] }]), /wildcard/],
    ['empty', ingress('x', []), /either rules or defaultBackend/],
    [
      'missing secret',
      ingress('x', [{ host: 'h', paths: [['/', 'Prefix', 's']] }], { tls: [{ hosts: ['h'], secretName: 'nope' }] }),
      /not found/,
    ],
    [
      'regex RE2 cannot run (backreference)',
      ingress('x', [{ host: 'h', paths: [['/(a)\\1', 'ImplementationSpecific', 's']] }], {
        annotations: { 'nginx.ingress.kubernetes.io/use-regex': 'true' },
      }),
      /paths\[0\]\.path: regex "\/\(a\)\\1": not supported by the linear-time \(RE2\) engine/,
    ],
    [
      'bad rewrite',
      ingress('x', [{ host: 'h', paths: [['/', 'Prefix', 's']] }], {
        annotations: { 'nginx.ingress.kubernetes.io/rewrite-target': 'x' },
      }),
      /rewrite-target/,
    ],
  ]
  for (const [name, ing, reason] of bad) {
    const good = ingress('good', [{ host: 'ok', paths: [['/', 'Prefix', 's']] }])
    const r = build([ing, good])
    const st = r.ingresses.find((i) => i.ingress === 'default/x')!
    t.equal(st.state, 'rejected', name)
    t.equal(st.code, 'MLT_PROXY_INGRESS_INVALID', `${name}: the code /status readers branch on`)
    t.match(st.reasons.join('\n'), reason, name)
    t.equal(who(r, 'ok', '/'), 'Prefix / → s', `${name}: the other Ingress still serves`)
  }
})

t.test('a now-invalid Ingress keeps its last good version serving (§1.2)', async (t) => {
  const v1 = ingress('x', [{ host: 'h', paths: [['/v1', 'Prefix', 's']] }])
  let r = build([v1])
  t.equal(who(r, 'h', '/v1'), 'Prefix /v1 → s')
  const v2 = ingress('x', [{ host: 'h', paths: [['/v2/../x', 'Prefix', 's']] }])
  const kept = r.lastGood
  r = build([v2], kept)
  t.equal(kept.get('default/x'), v1, 'the input map is not changed')
  t.equal(kept.size, 1)
  const st = r.ingresses[0]!
  t.equal(st.state, 'rejected')
  t.equal(st.servingLastGood, true)
  t.equal(who(r, 'h', '/v1'), 'Prefix /v1 → s')
  t.equal(r.lastGood.get('default/x'), v1, 'the last good version stays while the current one is rejected')
  r = build([], r.lastGood)
  t.equal(r.lastGood.size, 0, 'deleted Ingresses are forgotten')
})

t.test('recompiling reuses the work of Ingresses whose objects did not change (issue 14)', async (t) => {
  const store = new Store({ nodeName: 'n', serviceCidrs: [] })
  const endpoints = new EndpointRegistry()
  t.teardown(() => endpoints.closeAll(Date.now()))
  const metrics = new ProxyMetrics(new Registry())
  const contexts = new SecureContextCache()
  const objects = (aPort: number): KubeObject[] => [
    service('a'),
    pod('a1', 'a', '127.0.0.1', aPort),
    // Another namespace: a Pod change reaches the selector Services of its own namespace only (model/build-snapshot.ts).
    service('b', { ns: 'other' }),
    pod('b1', 'b', '127.0.0.2', 8080, { ns: 'other' }),
    ingress('ia', [{ host: 'a.test', paths: [['/', 'Prefix', 'a']] }]),
    ingress('ib', [{ host: 'b.test', paths: [['/', 'Prefix', 'b']] }], { ns: 'other' }),
    ingress('ib-canary', [{ host: 'b.test', paths: [['/', 'Prefix', 'a']] }], {
      annotations: { 'nginx.ingress.kubernetes.io/canary': 'true', 'nginx.ingress.kubernetes.io/canary-weight': '10' },
    }),
  ]
  const run = (objs: KubeObject[], previous: CompileResult | null): CompileResult => {
    store.setObjects(objs, [])
    const snapshot = store.flush()!
    return compile({
      snapshot,
      ingressClass: 'meshlet',
      pathOptions: DEFAULT_PATH_OPTIONS,
      endpoints,
      metrics,
      contexts,
      lastGood: previous?.lastGood ?? new Map(),
      previous,
    })
  }
  const r1 = run(objects(8080), null)
  const r2 = run(objects(9090), r1)
  t.equal(r2.units.get('other/ib'), r1.units.get('other/ib'), 'an Ingress whose Service is unchanged is reused')
  t.not(r2.units.get('default/ia'), r1.units.get('default/ia'), 'an Ingress whose Service changed is compiled again')
  t.equal(route(r2.table, 'a.test', '/')!.backend.group!.endpoints[0]!.port, 9090, 'and routes to the new endpoint')
  const b1 = route(r1.table, 'b.test', '/')!
  const b2 = route(r2.table, 'b.test', '/')!
  t.equal(b2.canary?.backend.group!.endpoints[0]!.port, 9090, 'the canary of a reused route is attached afresh')
  t.equal(b1.canary?.backend.group!.endpoints[0]!.port, 8080, 'the previous table is left as it was')
  t.equal(r1.units.get('other/ib')!.primaries[0]!.route.canary, null, 'routes of a unit are never changed')
})

t.test('backends: port by number, by name, targetPort fallback, missing Service (§1.3.7)', async (t) => {
  const objs: KubeObject[] = [
    service('web', { ports: [{ name: 'http', port: 80, targetPort: 8080 }] }),
    pod('web-1', 'web', '127.0.0.5', 8080),
  ]
  const r = build([
    ...objs,
    ingress('x', [
      {
        host: 'h',
        paths: [
          ['/num', 'Prefix', 'web', 80],
          ['/name', 'Prefix', 'web', 'http'],
          ['/target', 'Prefix', 'web', 8080],
          ['/missing', 'Prefix', 'nope', 80],
          ['/noport', 'Prefix', 'web', 81],
        ],
      },
    ]),
  ])
  const eps = (p: string) => route(r.table, 'h', p)!.backend.group?.endpoints.map((e) => `${e.host}:${e.port}`) ?? null
  t.same(eps('/num'), ['127.0.0.5:8080'])
  t.same(eps('/name'), ['127.0.0.5:8080'])
  t.same(eps('/target'), ['127.0.0.5:8080'])
  t.equal(eps('/missing'), null)
  t.equal(eps('/noport'), null)
  const st = r.ingresses[0]!
  t.match(st.warnings.join('\n'), /targetPort is 8080/)
  t.match(st.warnings.join('\n'), /Service default\/nope not found/)
  t.match(st.warnings.join('\n'), /has no port 81/)
})

t.test('unknown annotations are listed; unparsable values warn', async (t) => {
  const r = build([
    ingress('x', [{ host: 'h', paths: [['/', 'Prefix', 's']] }], {
      annotations: {
        'nginx.ingress.kubernetes.io/configuration-snippet': 'evil',
        'nginx.ingress.kubernetes.io/proxy-read-timeout': 'soon',
        'kubectl.kubernetes.io/last-applied-configuration': '{}',
      },
    }),
  ])
  t.same(r.ingresses[0]!.unknownAnnotations, ['nginx.ingress.kubernetes.io/configuration-snippet'])
  t.match(r.ingresses[0]!.warnings.join('\n'), /proxy-read-timeout: cannot parse "soon"/)
})

t.test('TLS hosts make vhosts TLS-enabled; wildcard TLS covers one label', async (t) => {
  const { execFileSync } = await import('node:child_process')
  const { mkdtempSync, readFileSync, rmSync } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const dir = mkdtempSync(`${tmpdir()}/mt-`)
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      `${dir}/k`,
      '-out',
      `${dir}/c`,
      '-days',
      '1',
      '-subj',
      '/CN=x',
    ],
    { stdio: 'ignore' },
  )
  const secret = tlsSecret('s', readFileSync(`${dir}/c`, 'utf8'), readFileSync(`${dir}/k`, 'utf8'))
  rmSync(dir, { recursive: true })
  const r = build([
    secret,
    ingress(
      'x',
      [
        { host: 'a.example.com', paths: [['/', 'Prefix', 's']] },
        { host: 'b.wild.com', paths: [['/', 'Prefix', 's']] },
        { host: 'plain.com', paths: [['/', 'Prefix', 's']] },
      ],
      { tls: [{ hosts: ['a.example.com', '*.wild.com'], secretName: 's' }] },
    ),
  ])
  t.equal(r.table.exact.get('a.example.com')!.tls, true)
  t.equal(r.table.exact.get('b.wild.com')!.tls, true)
  t.equal(r.table.exact.get('plain.com')!.tls, false)
  t.same(r.table.tls.hosts, { 'a.example.com': 'default/s', '*.wild.com': 'default/s' })
})
