// Forwarding behaviour (specs/ingress.md §1.4, §1.8): headers as ingress-nginx sets them, path confusion and
// smuggling attempts over raw sockets, body limits, rewrite-target, canary, affinity cookie, redirects.

import t from 'tap'
import { request } from 'undici'
import { parseCidr } from '../../model/ip.ts'
import type { KubeObject } from '../../model/objects.ts'
import {
  echoBackend,
  get,
  ingress,
  pod,
  rawRequest,
  service,
  startRouter,
  engineTest,
  type EchoBackend,
} from './helpers.ts'

const base = 60 + (process.pid % 50)

async function withBackends(
  t: { teardown(fn: () => unknown): void },
  names: string[],
): Promise<{ objects: KubeObject[]; b: Record<string, EchoBackend> }> {
  const objects: KubeObject[] = []
  const b: Record<string, EchoBackend> = {}
  let i = 1
  for (const n of names) {
    const ip = `127.2.${base}.${i++}`
    b[n] = await echoBackend(t, n, ip)
    objects.push(service(n), pod(`${n}-pod`, n, ip, b[n]!.port))
  }
  return { objects, b }
}

engineTest(
  t,
  'request headers: Host unchanged, X-Forwarded-*, X-Real-IP, X-Request-ID, hop-by-hop removed',
  async (t) => {
    const { objects } = await withBackends(t, ['web'])
    const r = await startRouter(t, [
      ...objects,
      ingress('i', [{ host: 'shop.example.com', paths: [['/', 'Prefix', 'web']] }]),
    ])
    const res = await get(r, 'Shop.Example.com:8080', '/x?q=1', {
      headers: {
        'x-forwarded-for': '6.6.6.6',
        'x-forwarded-proto': 'https',
        'x-real-ip': '6.6.6.6',
        proxy: 'http://evil',
        'x-custom': 'kept',
      },
    })
    t.equal(res.status, 200)
    const h = res.echo!.headers
    t.equal(h.host, 'Shop.Example.com:8080', 'Host keeps its case and port (H6)')
    t.equal(h['x-forwarded-for'], '127.0.0.1', 'untrusted XFF replaced by the client address')
    t.equal(h['x-original-forwarded-for'], '6.6.6.6')
    t.equal(h['x-real-ip'], '127.0.0.1')
    t.equal(h['x-forwarded-proto'], 'http')
    t.equal(h['x-forwarded-scheme'], 'http')
    t.equal(h['x-scheme'], 'http')
    t.equal(h['x-forwarded-host'], 'Shop.Example.com:8080')
    t.equal(h['x-forwarded-port'], String(r.http.port))
    t.match(h['x-request-id'], /^[0-9a-f]{32}$/)
    t.equal(res.headers['x-request-id'], h['x-request-id'], 'the request id is returned to the client')
    t.equal(h.proxy, undefined, 'Proxy header removed (httpoxy)')
    t.equal(h['x-custom'], 'kept')
    t.equal(res.echo!.url, '/x?q=1')

    const again = await get(r, 'shop.example.com', '/', { headers: { 'x-request-id': 'abc-123' } })
    t.equal(again.echo!.headers['x-request-id'], 'abc-123', 'an incoming X-Request-ID is kept')
    t.equal(again.headers['x-request-id'], 'abc-123')
  },
)

engineTest(t, '--trust-forwarded-from: XFF appended and X-Forwarded-Proto kept from trusted peers', async (t) => {
  const { objects } = await withBackends(t, ['web'])
  const r = await startRouter(t, [...objects, ingress('i', [{ paths: [['/', 'Prefix', 'web']] }])], {
    options: { trustForwardedFrom: [parseCidr('127.0.0.0/8')!] },
  })
  const res = await get(r, 'h', '/', { headers: { 'x-forwarded-for': '203.0.113.9', 'x-forwarded-proto': 'https' } })
  t.equal(res.echo!.headers['x-forwarded-for'], '203.0.113.9, 127.0.0.1')
  t.equal(res.echo!.headers['x-real-ip'], '203.0.113.9')
  t.equal(res.echo!.headers['x-forwarded-proto'], 'https')
})

engineTest(t, 'Connection-listed headers are hop-by-hop', async (t) => {
  const { objects } = await withBackends(t, ['web'])
  const r = await startRouter(t, [...objects, ingress('i', [{ paths: [['/', 'Prefix', 'web']] }])])
  const out = await rawRequest(
    r.http,
    'GET / HTTP/1.1\r\nHost: h\r\nConnection: close, X-Secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nX-Secret: 1\r\nX-Other: 2\r\n\r\n',
  )
  const body = JSON.parse(out.slice(out.indexOf('\r\n\r\n') + 4))
  t.equal(body.headers['x-secret'], undefined)
  t.equal(body.headers['keep-alive'], undefined)
  t.equal(body.headers['te'], undefined)
  t.equal(body.headers['proxy-connection'], undefined)
  t.equal(body.headers['x-other'], '2')
})

engineTest(t, 'path confusion: the normalised path is matched and forwarded (§1.4, §5 items 1-3)', async (t) => {
  const { objects, b } = await withBackends(t, ['public', 'private'])
  const r = await startRouter(t, [
    ...objects,
    ingress('i', [
      {
        host: 'h',
        paths: [
          ['/public', 'Prefix', 'public'],
          ['/private', 'Prefix', 'private'],
        ],
      },
    ]),
  ])
  const rows: [string, string, string][] = [
    ['/public/../private/x', 'private', '/private/x'],
    ['/public/%2e%2e/private', 'private', '/private'],
    ['/public/%2E%2e/private', 'private', '/private'],
    ['/public//../private', 'private', '/private'],
    ['//public///a', 'public', '/public/a'],
    ['/public/..%2fprivate', 'public', '/public/..%2Fprivate'],
    ['/public/%7euser', 'public', '/public/~user'],
    ['/private/../public?x=/../private', 'public', '/public?x=/../private'],
    ['/../../public', 'public', '/public'],
  ]
  for (const [path, server, upstreamPath] of rows) {
    const out = await rawRequest(r.http, `GET ${path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n`)
    t.match(out, /^HTTP\/1\.1 200/, path)
    const body = JSON.parse(out.slice(out.indexOf('\r\n\r\n') + 4))
    t.equal(body.server, server, `${path} → ${server}`)
    t.equal(body.url, upstreamPath, `${path} arrives as ${upstreamPath}`)
  }
  void b
})

engineTest(t, 'malformed requests are answered 400/405 and never reach a backend (§1.4)', async (t) => {
  const { objects, b } = await withBackends(t, ['web'])
  const r = await startRouter(t, [...objects, ingress('i', [{ paths: [['/', 'Prefix', 'web']] }])])
  const rows: [string, string, RegExp][] = [
    ['fragment', 'GET /a#b HTTP/1.1\r\nHost: h\r\n\r\n', /^HTTP\/1\.1 400/],
    ['backslash', 'GET /a\\..\\b HTTP/1.1\r\nHost: h\r\n\r\n', /^HTTP\/1\.1 400/],
    ['bad escape', 'GET /a%zz HTTP/1.1\r\nHost: h\r\n\r\n', /^HTTP\/1\.1 400/],
    ['NUL escape', 'GET /a%00 HTTP/1.1\r\nHost: h\r\n\r\n', /^HTTP\/1\.1 400/],
    ['asterisk', 'OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n', /^HTTP\/1\.1 400/],
    ['two Host lines', 'GET / HTTP/1.1\r\nHost: h\r\nHost: evil\r\n\r\n', /^HTTP\/1\.1 400/],
    ['two Host lines, absolute-form', 'GET http://h/ HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n', /^HTTP\/1\.1 400/],
    ['Host with slash', 'GET / HTTP/1.1\r\nHost: a/b\r\n\r\n', /^HTTP\/1\.1 400/],
    ['Host with bad port', 'GET / HTTP/1.1\r\nHost: a:99999x\r\n\r\n', /^HTTP\/1\.1 400/],
    ['no Host on 1.1', 'GET / HTTP/1.1\r\n\r\n', /^HTTP\/1\.1 400/],
    [
      'CL + TE',
      'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
      /^HTTP\/1\.1 400/,
    ],
    ['TE on HTTP/1.0', 'POST / HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', /^HTTP\/1\.1 400/],
    [
      'two Content-Length',
      'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx',
      /^HTTP\/1\.1 400/,
    ],
    ['TE xchunked', 'POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n', /^HTTP\/1\.1 400/],
    [
      'TE chunked, identity',
      'POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n',
      /^HTTP\/1\.1 400/,
    ],
    ['obs-fold', 'GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n  folded\r\n\r\n', /^HTTP\/1\.1 400/],
    ['bare LF line ends', 'GET / HTTP/1.1\nHost: h\n\n', /^HTTP\/1\.1 400/],
    ['bare LF inside the head', 'GET / HTTP/1.1\r\nHost: h\nX-A: 1\r\n\r\n', /^HTTP\/1\.1 400/],
    ['space before colon', 'GET / HTTP/1.1\r\nHost : h\r\n\r\n', /^HTTP\/1\.1 400/],
    ['Content-Length +1', 'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\nx', /^HTTP\/1\.1 400/],
    ['bad chunk size', 'POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', /^HTTP\/1\.1 400/],
    ['NUL in a header value', 'GET / HTTP/1.1\r\nHost: h\r\nX-A: a\u0000b\r\n\r\n', /^HTTP\/1\.1 400/],
    ['lowercase method', 'get / HTTP/1.1\r\nHost: h\r\n\r\n', /^HTTP\/1\.1 400/],
    ['head over 16 KiB', `GET / HTTP/1.1\r\nHost: h\r\nX-A: ${'a'.repeat(17000)}\r\n\r\n`, /^HTTP\/1\.1 431/],
    ['TRACE', 'TRACE / HTTP/1.1\r\nHost: h\r\n\r\n', /^HTTP\/1\.1 405/],
    ['CONNECT', 'CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n', /^HTTP\/1\.1 405/],
  ]
  for (const [name, bytes, want] of rows) t.match(await rawRequest(r.http, bytes, 1500), want, name)
  t.equal(b.web!.count, 0, 'the backend saw none of them')
})

engineTest(
  t,
  'absolute-form target overrides Host for routing; HTTP/1.0 without Host uses the catch-all',
  async (t) => {
    const { objects } = await withBackends(t, ['a', 'b'])
    const r = await startRouter(t, [
      ...objects,
      ingress('i', [{ host: 'a.test', paths: [['/', 'Prefix', 'a']] }, { paths: [['/', 'Prefix', 'b']] }]),
    ])
    let out = await rawRequest(r.http, 'GET http://A.TEST./x HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n')
    t.match(out, /"server":"a"/)
    t.match(out, /"url":"\/x"/)
    out = await rawRequest(r.http, 'GET /y HTTP/1.0\r\n\r\n')
    t.match(out, /"server":"b"/)
  },
)

engineTest(
  t,
  'proxy-body-size: Content-Length over the limit → 413; chunked over the limit → 413; under passes',
  async (t) => {
    const { objects, b } = await withBackends(t, ['web'])
    const r = await startRouter(t, [
      ...objects,
      ingress('i', [{ paths: [['/', 'Prefix', 'web']] }], {
        annotations: { 'nginx.ingress.kubernetes.io/proxy-body-size': '1k' },
      }),
    ])
    const small = await get(r, 'h', '/', { method: 'POST', body: 'x'.repeat(1000) })
    t.equal(small.status, 200)
    t.equal(small.echo!.body.length, 1000)
    const big = await get(r, 'h', '/', { method: 'POST', body: 'x'.repeat(1025) })
    t.equal(big.status, 413)
    const before = b.web!.count
    const out = await rawRequest(
      r.http,
      `POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n${'y'.repeat(1024)}\r\n10\r\n${'z'.repeat(16)}\r\n0\r\n\r\n`,
    )
    t.match(out, /^HTTP\/1\.1 413/)
    const chunkedOk = await rawRequest(
      r.http,
      `POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
    )
    t.match(chunkedOk, /"body":"hello"/)
    t.ok(b.web!.count >= before)
  },
)

engineTest(
  t,
  'a large body streams both ways (no whole-body buffering limit by default beyond proxy-body-size)',
  async (t) => {
    const { objects, b } = await withBackends(t, ['web'])
    b.web!.handler = (req, res) => {
      let n = 0
      req.on('data', (c: Buffer) => (n += c.length))
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'text/plain' })
        // 4 MiB streamed back in 64 KiB chunks
        const chunk = Buffer.alloc(65536, 97)
        let left = 64
        const write = () => {
          while (left > 0) {
            left--
            if (!res.write(chunk)) return res.once('drain', write)
          }
          res.end(`\n${n}`)
        }
        write()
      })
    }
    const r = await startRouter(t, [
      ...objects,
      ingress('i', [{ paths: [['/', 'Prefix', 'web']] }], {
        annotations: { 'nginx.ingress.kubernetes.io/proxy-body-size': '0' },
      }),
    ])
    const res = await request(r.url + '/', {
      method: 'POST',
      headers: { host: 'h' },
      body: Buffer.alloc(3 * 1024 * 1024, 98),
    })
    const text = await res.body.text()
    t.equal(res.statusCode, 200)
    t.equal(text.length, 4 * 1024 * 1024 + 1 + String(3 * 1024 * 1024).length)
    t.ok(text.endsWith(`\n${3 * 1024 * 1024}`))
  },
)

engineTest(t, 'rewrite-target with use-regex capture groups (ingress-nginx example)', async (t) => {
  const { objects } = await withBackends(t, ['web'])
  const r = await startRouter(t, [
    ...objects,
    ingress('rw', [{ host: 'rewrite.bar.com', paths: [['/something(/|$)(.*)', 'ImplementationSpecific', 'web']] }], {
      annotations: {
        'nginx.ingress.kubernetes.io/use-regex': 'true',
        'nginx.ingress.kubernetes.io/rewrite-target': '/$2',
      },
    }),
  ])
  for (const [path, want] of [
    ['/something', '/'],
    ['/something/', '/'],
    ['/something/new', '/new'],
    ['/something/new?a=1', '/new?a=1'],
  ]) {
    const res = await get(r, 'rewrite.bar.com', path!)
    t.equal(res.echo?.url, want, `${path} → ${want}`)
  }
  t.equal((await get(r, 'rewrite.bar.com', '/other')).status, 404)
})

engineTest(t, 'canary by header, by cookie and by weight', async (t) => {
  const { objects } = await withBackends(t, ['stable', 'canary', 'w-canary'])
  const r = await startRouter(t, [
    ...objects,
    ingress('main', [
      {
        host: 'c',
        paths: [
          ['/', 'Prefix', 'stable'],
          ['/w', 'Prefix', 'stable'],
        ],
      },
    ]),
    ingress('canary', [{ host: 'c', paths: [['/', 'Prefix', 'canary']] }], {
      annotations: {
        'nginx.ingress.kubernetes.io/canary': 'true',
        'nginx.ingress.kubernetes.io/canary-by-header': 'X-Canary',
        'nginx.ingress.kubernetes.io/canary-by-cookie': 'canary_cookie',
      },
    }),
    ingress('canary-w', [{ host: 'c', paths: [['/w', 'Prefix', 'w-canary']] }], {
      annotations: { 'nginx.ingress.kubernetes.io/canary': 'true', 'nginx.ingress.kubernetes.io/canary-weight': '50' },
    }),
  ])
  t.equal((await get(r, 'c', '/')).echo?.server, 'stable')
  t.equal((await get(r, 'c', '/', { headers: { 'x-canary': 'always' } })).echo?.server, 'canary')
  t.equal(
    (await get(r, 'c', '/', { headers: { 'x-canary': 'never', cookie: 'canary_cookie=always' } })).echo?.server,
    'stable',
  )
  t.equal((await get(r, 'c', '/', { headers: { cookie: 'a=b; canary_cookie=always' } })).echo?.server, 'canary')
  const seen: Record<string, number> = {}
  for (let i = 0; i < 200; i++) {
    const s = (await get(r, 'c', '/w')).echo!.server
    seen[s] = (seen[s] ?? 0) + 1
  }
  t.ok((seen['w-canary'] ?? 0) > 50 && (seen['stable'] ?? 0) > 50, `weight 50 splits traffic: ${JSON.stringify(seen)}`)
  t.match(r.status().routes.find((x) => x.path === '/')?.canary, /default\/canary/)
})

engineTest(t, 'affinity cookie pins a client to one endpoint', async (t) => {
  const objects: KubeObject[] = [service('web')]
  for (let i = 1; i <= 3; i++) {
    const ip = `127.3.${base}.${i}`
    const b = await echoBackend(t, `web-${i}`, ip)
    objects.push(pod(`web-${i}`, 'web', ip, b.port))
  }
  const r = await startRouter(t, [
    ...objects,
    ingress('aff', [{ host: 'a', paths: [['/app', 'Prefix', 'web']] }], {
      annotations: {
        'nginx.ingress.kubernetes.io/affinity': 'cookie',
        'nginx.ingress.kubernetes.io/session-cookie-name': 'route',
        'nginx.ingress.kubernetes.io/session-cookie-max-age': '172800',
      },
    }),
  ])
  const first = await get(r, 'a', '/app')
  const setCookie = String(first.headers['set-cookie'])
  t.match(setCookie, /^route=[0-9a-f]{16}; Path=\/app; HttpOnly; Max-Age=172800/)
  const cookie = setCookie.split(';')[0]!
  for (let i = 0; i < 10; i++) {
    const res = await get(r, 'a', '/app', { headers: { cookie } })
    t.equal(res.echo!.server, first.echo!.server)
    t.equal(res.headers['set-cookie'], undefined, 'no new cookie while the endpoint lives')
  }
  const stale = await get(r, 'a', '/app', { headers: { cookie: 'route=0000000000000000' } })
  t.match(String(stale.headers['set-cookie']), /^route=/, 'an unknown cookie gets a new endpoint and cookie')
})

engineTest(t, 'metrics per Ingress path and Service', async (t) => {
  const { objects } = await withBackends(t, ['web'])
  const r = await startRouter(t, [...objects, ingress('m', [{ host: 'm', paths: [['/api', 'Prefix', 'web']] }])])
  await get(r, 'm', '/api/x')
  await get(r, 'm', '/nothing')
  const text = await r.metrics.metrics()
  t.match(
    text,
    /meshlet_proxy_requests_total\{ingress="default\/m",path="\/api",service="default\/web:8080",code="2xx"\} 1/,
  )
  t.match(text, /meshlet_proxy_requests_total\{ingress="",path="",service="",code="4xx"\} 1/)
  t.match(
    text,
    /meshlet_proxy_request_duration_seconds_count\{ingress="default\/m",path="\/api",service="default\/web:8080"\} 1/,
  )
})

t.test('a removed Ingress has its series removed from /metrics; the others stay', async (t) => {
  const { objects } = await withBackends(t, ['web'])
  const keep = ingress('keep', [{ host: 'k', paths: [['/', 'Prefix', 'web']] }])
  const gone = ingress('gone', [{ host: 'g', paths: [['/', 'Prefix', 'web']] }])
  const r = await startRouter(t, [...objects, keep, gone])
  t.equal((await get(r, 'k', '/')).status, 200)
  t.equal((await get(r, 'g', '/')).status, 200)
  let text = await r.metrics.metrics()
  t.match(text, /meshlet_proxy_requests_total\{ingress="default\/gone",[^}]*\} 1/, 'the series exists while it routes')
  t.match(text, /meshlet_proxy_request_duration_seconds_count\{ingress="default\/gone",[^}]*\} 1/)
  r.set([...objects, keep])
  t.equal((await get(r, 'g', '/')).status, 404, 'the Ingress is gone')
  text = await r.metrics.metrics()
  t.notMatch(text, /ingress="default\/gone"/, 'no series of the removed Ingress is left')
  t.match(text, /meshlet_proxy_requests_total\{ingress="default\/keep",[^}]*code="2xx"\} 1/, 'the others keep counting')
  t.match(text, /meshlet_proxy_request_duration_seconds_count\{ingress="default\/keep",[^}]*\} 1/)
})

engineTest(
  t,
  'access log: one line per request with method, host, path, status, upstream, durations, bytes',
  async (t) => {
    const { objects, b } = await withBackends(t, ['web'])
    const lines: Record<string, unknown>[] = []
    const { pino } = await import('pino')
    const { Writable } = await import('node:stream')
    const sink = new Writable({
      write(c, _e, cb) {
        lines.push(JSON.parse(String(c)))
        cb()
      },
    })
    const r = await startRouter(t, [...objects, ingress('l', [{ host: 'l', paths: [['/', 'Prefix', 'web']] }])], {
      options: { accessLog: true },
      log: pino({ level: 'info' }, sink),
    })
    await get(r, 'l', '/hello')
    await new Promise((res) => setImmediate(res))
    const line = lines.find((l) => l.msg === 'request')
    t.ok(line)
    t.match(line, {
      method: 'GET',
      host: 'l',
      path: '/hello',
      status: 200,
      ingress: 'default/l',
      service: 'default/web:8080',
      upstream: `${b.web!.host}:${b.web!.port}`,
    })
    t.type(line?.duration, 'number')
    t.type(line?.upstreamDuration, 'number')
    t.ok(Number(line?.bytesOut) > 0)
  },
)
