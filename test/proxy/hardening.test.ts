// Issue 13, Ingress part: one hostile client must not bypass routing, jam a Service or stall the process. Each test
// here failed on the code before the fix it names; all use real sockets on loopback, bounded in count and time.

import t from 'tap'
import { createServer, type Server, type Socket } from 'node:net'
import type { AddressInfo } from 'node:net'
import {
  echoBackend,
  eventually,
  ingress,
  type Teardown,
  pod,
  rawRequest,
  service,
  startRouter,
  type Router,
} from './helpers.ts'

const ENGINES = ['raw', 'node'] as const

/** A TCP backend that records every request line it reads and answers with `answer(firstLine)`. */
async function rawBackend(
  t: Teardown,
  answer: (line: string, sock: Socket) => void,
): Promise<{ host: string; port: number; lines: string[]; server: Server }> {
  const lines: string[] = []
  const server = createServer((sock) => {
    let buf = ''
    sock.setEncoding('latin1')
    sock.on('error', () => {})
    sock.on('data', (d: string) => {
      buf += d
      for (;;) {
        const end = buf.indexOf('\r\n\r\n')
        if (end < 0) return
        const head = buf.slice(0, end)
        buf = buf.slice(end + 4)
        const line = head.split('\r\n')[0]!
        lines.push(head)
        answer(line, sock)
      }
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  t.teardown(() => new Promise<void>((r) => server.close(() => r())))
  return { host: '127.0.0.1', port: (server.address() as AddressInfo).port, lines, server }
}

const WS_HEAD =
  'GET /socket HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
  'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n'

function wsObjects(host: string, port: number) {
  return [
    service('ws'),
    pod('ws-1', 'ws', host, port),
    ingress('ws', [{ host: 'ws.test', paths: [['/socket', 'Prefix', 'ws']] }]),
  ]
}

for (const engine of ENGINES) {
  t.test(`${engine}: an Upgrade the endpoint does not switch never tunnels the next request`, async (t) => {
    const b = await rawBackend(t, (_line, sock) => {
      sock.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\nok')
    })
    const r = await startRouter(t, wsObjects(b.host, b.port), { extra: { engine } })
    const smuggled = 'GET /private HTTP/1.1\r\nHost: elsewhere.test\r\nX-Real-IP: 6.6.6.6\r\n\r\n'
    const out = await rawRequest(r.http, WS_HEAD + smuggled, 3000)
    t.match(out, /^HTTP\/1\.1 200 OK\r\n/, 'the refusal is relayed')
    t.match(out, /connection: close/i, 'and the connection closes after it')
    t.equal(b.lines.length, 1, 'the endpoint saw one request')
    t.notOk(
      b.lines.some((l) => l.startsWith('GET /private')),
      'the pipelined request never reached the endpoint',
    )
    t.equal((out.match(/HTTP\/1\.1 /g) ?? []).length, 1, 'one response')
  })

  t.test(`${engine}: an endpoint that resets before 101 gets the client a 502`, async (t) => {
    const b = await rawBackend(t, (_line, sock) => sock.resetAndDestroy())
    const r = await startRouter(t, wsObjects(b.host, b.port), { extra: { engine } })
    const out = await rawRequest(r.http, WS_HEAD, 3000)
    t.match(out, /^HTTP\/1\.1 502 /)
  })

  t.test(`${engine}: a chunked refusal is relayed whole and the connection closes`, async (t) => {
    const b = await rawBackend(t, (_line, sock) => {
      sock.write('HTTP/1.1 403 Forbidden\r\ntransfer-encoding: chunked\r\n\r\n5\r\nnope!\r\n0\r\n\r\n')
    })
    const r = await startRouter(t, wsObjects(b.host, b.port), { extra: { engine } })
    const started = Date.now()
    const out = await rawRequest(r.http, WS_HEAD, 5000)
    t.match(out, /^HTTP\/1\.1 403 Forbidden\r\n[\s\S]*\r\n\r\n5\r\nnope!\r\n0\r\n\r\n$/)
    t.ok(Date.now() - started < 4000, 'closed at the end of the body, not by a timeout')
  })

  t.test(`${engine}: Upgrade: h2c is plain HTTP (no tunnel, no Upgrade forwarded)`, async (t) => {
    const echo = await echoBackend(t, 'e')
    const r = await startRouter(
      t,
      [
        service('web'),
        pod('web-1', 'web', echo.host, echo.port),
        ingress('web', [{ host: 'a.test', paths: [['/', 'Prefix', 'web']] }]),
      ],
      { extra: { engine } },
    )
    const out = await rawRequest(
      r.http,
      'GET /x HTTP/1.1\r\nHost: a.test\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings, close\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n',
      3000,
    )
    t.match(out, /^HTTP\/1\.1 200 /)
    const body = JSON.parse(out.slice(out.indexOf('{'), out.lastIndexOf('}') + 1)) as {
      headers: Record<string, string>
    }
    t.equal(body.headers.upgrade, undefined, 'Upgrade is not forwarded')
    t.equal(body.headers['http2-settings'], undefined, 'nor the headers Connection names')
  })

  t.test(`${engine}: an absolute-form target wins over Host (RFC 9112 §3.2.2)`, async (t) => {
    const echo = await echoBackend(t, 'e')
    const r = await routerFor(t, echo, engine)
    const out = await rawRequest(r.http, 'GET http://a.test/x HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n')
    t.match(out, /^HTTP\/1\.1 200 /)
    const body = JSON.parse(out.slice(out.indexOf('{'), out.lastIndexOf('}') + 1)) as {
      headers: Record<string, string>
    }
    t.equal(body.headers.host, 'a.test', 'the endpoint gets the host meshlet routed by')
    t.equal(body.headers['x-forwarded-host'], 'a.test')
  })

  t.test(`${engine}: Host port above 65535, HTTP/2.0 on an HTTP/1 line, TE other than chunked`, async (t) => {
    const echo = await echoBackend(t, 'e')
    const r = await routerFor(t, echo, engine)
    const ok = await rawRequest(r.http, 'GET / HTTP/1.1\r\nHost: a.test:65535\r\nConnection: close\r\n\r\n')
    t.match(ok, /^HTTP\/1\.1 200 /, 'port 65535 is fine')
    const port = await rawRequest(r.http, 'GET / HTTP/1.1\r\nHost: a.test:65536\r\n\r\n')
    t.match(port, /^HTTP\/1\.1 400 /, 'port 65536 → 400')
    const h2 = await rawRequest(r.http, 'GET / HTTP/2.0\r\nHost: a.test\r\n\r\n')
    t.match(h2, /^HTTP\/1\.1 505 /, 'HTTP/2.0 on a request line → 505')
    const te = await rawRequest(
      r.http,
      'POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: identity, chunked\r\n\r\n1\r\na\r\n0\r\n\r\n',
    )
    t.match(te, /^HTTP\/1\.1 400 /, 'identity, chunked → refused')
    t.equal(echo.count, 1, 'only the valid request reached the endpoint')
  })
}

async function routerFor(t: Teardown, echo: { host: string; port: number }, engine: 'raw' | 'node'): Promise<Router> {
  return startRouter(
    t,
    [
      service('web'),
      pod('web-1', 'web', echo.host, echo.port),
      ingress('web', [{ host: 'a.test', paths: [['/', 'Prefix', 'web']] }]),
      ingress('other', [{ host: 'b.test', paths: [['/', 'Prefix', 'none']] }]),
    ],
    { extra: { engine } },
  )
}

t.test('ReDoS: a use-regex path runs in linear time; the event loop is never stalled', async (t) => {
  const echo = await echoBackend(t, 'e')
  const r = await startRouter(t, [
    service('web'),
    pod('web-1', 'web', echo.host, echo.port),
    // Passed the old "no nested quantifiers" heuristic; each extra "a" doubled V8's backtracking time.
    ingress('evil', [{ host: 'a.test', paths: [['/x(a|aa)+$', 'ImplementationSpecific', 'web']] }], {
      annotations: { 'nginx.ingress.kubernetes.io/use-regex': 'true' },
    }),
    ingress('other', [{ host: 'b.test', paths: [['/', 'Prefix', 'web']] }]),
  ])
  let ticks = 0
  let worstGap = 0
  let last = performance.now()
  const timer = setInterval(() => {
    const now = performance.now()
    worstGap = Math.max(worstGap, now - last)
    last = now
    ticks++
  }, 10)
  t.teardown(() => clearInterval(timer))
  const started = performance.now()
  const evil = await rawRequest(
    r.http,
    `GET /x${'a'.repeat(36)}b HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n`,
  )
  const took = performance.now() - started
  t.match(evil, /^HTTP\/1\.1 404 /, 'no match: 404')
  t.ok(took < 1500, `answered in ${took.toFixed(0)} ms (the backtracking engine took seconds)`)
  const good = await rawRequest(r.http, `GET /xaa HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n`)
  t.match(good, /^HTTP\/1\.1 200 /, 'the pattern still matches what it should')
  t.ok(worstGap < 1000, `the event loop kept turning (worst gap ${worstGap.toFixed(0)} ms, ${ticks} ticks)`)
})

/** A backend that reads request heads and never answers; counts the connections it has open. */
async function silentBackend(t: Teardown): Promise<{ host: string; port: number; server: Server; open(): number }> {
  const sockets = new Set<Socket>()
  const server = createServer((sock) => {
    sockets.add(sock)
    sock.on('error', () => {})
    sock.on('close', () => sockets.delete(sock))
    sock.resume()
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  t.teardown(() => {
    for (const s of sockets) s.destroy()
    return new Promise<void>((r) => server.close(() => r()))
  })
  return { host: '127.0.0.1', port: (server.address() as AddressInfo).port, server, open: () => sockets.size }
}

function postHead(host: string, length: number): string {
  return `POST /up HTTP/1.1\r\nHost: ${host}\r\nContent-Length: ${length}\r\n\r\n`
}

/** Opens a client connection to the router and writes `bytes`; resolves once connected and written. */
async function client(t: Teardown, addr: { host: string; port: number }, bytes: string): Promise<Socket> {
  const { connect } = await import('node:net')
  const s = connect(addr.port, addr.host)
  s.on('error', () => {})
  t.teardown(() => s.destroy())
  await new Promise<void>((r) => s.once('connect', () => r()))
  s.write(bytes)
  return s
}

function uploadObjects(backend: { host: string; port: number }, annotations: Record<string, string> = {}) {
  return [
    service('up'),
    pod('up-1', 'up', backend.host, backend.port),
    ingress('up', [{ host: 'up.test', paths: [['/', 'Prefix', 'up']] }], {
      annotations: { 'nginx.ingress.kubernetes.io/proxy-read-timeout': '60', ...annotations },
    }),
  ]
}

t.test('aborted uploads free their upstream connections at once', async (t) => {
  const b = await silentBackend(t)
  const r = await startRouter(t, uploadObjects(b))
  const clients: Socket[] = []
  for (let i = 0; i < 20; i++) clients.push(await client(t, r.http, postHead('up.test', 1000) + 'x'.repeat(10)))
  await eventually(() => b.open() === 20, 5000)
  t.equal(b.open(), 20, 'each upload has its upstream connection')
  for (const c of clients) c.end() // the client leaves mid-body (FIN)
  await eventually(() => b.open() === 0, 3000).catch(() => {})
  t.equal(b.open(), 0, 'every upstream connection is closed once its client left')
  t.equal(r.status().inflight, 0, 'nothing counted in flight')
})

t.test('client-body-timeout: a client that stops sending its body gets 408 and frees the endpoint', async (t) => {
  const b = await silentBackend(t)
  const r = await startRouter(t, uploadObjects(b, { 'nginx.ingress.kubernetes.io/client-body-timeout': '1' }))
  const c = await client(t, r.http, postHead('up.test', 100) + 'x'.repeat(10))
  let out = ''
  c.setEncoding('latin1')
  c.on('data', (d: string) => (out += d))
  const started = Date.now()
  await eventually(() => out.length > 0, 6000).catch(() => {})
  t.match(out, /^HTTP\/1\.1 408 /, '408 once the body stalled for client-body-timeout')
  t.ok(Date.now() - started < 6000, 'within the timeout and a sweep')
  await eventually(() => b.open() === 0, 3000).catch(() => {})
  t.equal(b.open(), 0, 'the upstream connection is closed')
})

t.test('a full pool answers 503 after proxy-connect-timeout instead of queueing forever', async (t) => {
  const b = await silentBackend(t)
  const r = await startRouter(t, uploadObjects(b, { 'nginx.ingress.kubernetes.io/proxy-connect-timeout': '1' }))
  // 256 requests the endpoint never answers fill its pool (UPSTREAM_CONNECTIONS).
  for (let i = 0; i < 256; i++) await client(t, r.http, 'GET /held HTTP/1.1\r\nHost: up.test\r\n\r\n')
  await eventually(() => b.open() === 256, 10000)
  const started = Date.now()
  const out = await rawRequest(r.http, 'GET /late HTTP/1.1\r\nHost: up.test\r\nConnection: close\r\n\r\n', 6000)
  t.match(out, /^HTTP\/1\.1 503 /, 'the 257th request gets 503')
  t.ok(Date.now() - started < 6000, 'after about proxy-connect-timeout')
})

t.test('connection cap: idle keep-alive connections are closed first; busy ones are never cut', async (t) => {
  const echo = await echoBackend(t, 'e')
  const r = await startRouter(
    t,
    [service('web'), pod('web-1', 'web', echo.host, echo.port), ingress('web', [{ paths: [['/', 'Prefix', 'web']] }])],
    { options: { maxConnections: 3 } },
  )
  const closed = new Set<number>()
  const open = async (i: number, bytes: string, waitAnswer: boolean): Promise<Socket> => {
    const s = await client(t, r.http, bytes)
    s.on('close', () => closed.add(i))
    if (waitAnswer) await new Promise((res) => s.once('data', res))
    return s
  }
  const get = 'GET / HTTP/1.1\r\nHost: a.test\r\n\r\n'
  for (let i = 0; i < 3; i++) await open(i, get, true) // three idle keep-alive connections
  await open(3, get, true) // a fourth: room is made
  await eventually(() => closed.has(0), 3000).catch(() => {})
  t.ok(closed.has(0), 'the oldest idle connection was closed to make room')
  t.notOk(closed.has(1) || closed.has(2) || closed.has(3), 'the others stay')
  // Three connections in the middle of a request head take the idle ones' places; then nothing is idle, and a new
  // connection is refused while the busy ones are kept.
  for (const i of [4, 5, 6]) {
    await open(i, 'GET / HTTP/1.1\r\nHost: a', false)
    await eventually(() => closed.size === i - 2, 3000).catch(() => {})
  }
  t.same([...closed].sort(), [0, 1, 2, 3], 'each busy newcomer closed one idle connection')
  await open(7, 'GET / HTTP/1.1\r\nHost: a', false)
  await eventually(() => closed.has(7), 3000).catch(() => {})
  t.ok(closed.has(7), 'a connection over the cap with nothing idle is refused')
  t.notOk(closed.has(4) || closed.has(5) || closed.has(6), 'connections in the middle of a request are not cut')
  t.equal(r.status().listeners.http?.connections.refused, 1)
})

t.test('default connection cap from RLIMIT_NOFILE', async (t) => {
  const { defaultMaxConnections, readFileLimit } = await import('../../proxy/limits.ts')
  t.equal(defaultMaxConnections(20000), 4744)
  t.equal(defaultMaxConnections(1024), 192)
  t.equal(defaultMaxConnections(1048576), 65536)
  t.equal(defaultMaxConnections(null), 192, 'unknown limit: sized for 1024')
  t.same(
    readFileLimit(
      'Limit  Soft Limit  Hard Limit  Units\nMax open files            1024                 4096                 files\n',
    ),
    {
      soft: 1024,
      hard: 4096,
    },
  )
  const mine = readFileLimit()
  if (mine !== null) t.equal(mine.soft, mine.hard, 'Node raised the soft limit to the hard one at start')
})

t.test('meshlet check rejects the Ingresses meshlet up rejects', async (t) => {
  const { execFile } = await import('node:child_process')
  const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const dir = mkdtempSync(`${tmpdir()}/meshlet-check-`)
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const manifest = (path: string) => `apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: rx
  annotations: {nginx.ingress.kubernetes.io/use-regex: "true"}
spec:
  ingressClassName: meshlet
  rules:
    - host: a.test
      http:
        paths:
          - {path: '${path}', pathType: ImplementationSpecific, backend: {service: {name: web, port: {number: 80}}}}
`
  const run = (file: string) =>
    new Promise<{ code: number; out: string }>((resolve) => {
      execFile(
        process.execPath,
        [new URL('../../bin/meshlet.ts', import.meta.url).pathname, 'check', '-f', file],
        { timeout: 20000 },
        (err, stdout, stderr) => resolve({ code: err === null ? 0 : Number(err.code ?? 1), out: stdout + stderr }),
      )
    })
  writeFileSync(`${dir}/bad.yaml`, manifest('/(a)\\1'))
  writeFileSync(`${dir}/good.yaml`, manifest('/x(a|aa)+$'))
  const bad = await run(`${dir}/bad.yaml`)
  t.equal(bad.code, 1, 'a regex up would reject fails check')
  t.match(bad.out, /Ingress default\/rx\): spec\.rules\[0\]\.http\.paths\[0\]\.path: regex/, 'with the path named')
  const good = await run(`${dir}/good.yaml`)
  t.equal(good.code, 0, 'a regex up accepts passes check')
})

t.test('client-body-timeout on the https listener (HTTP/1.1 over TLS and HTTP/2)', async (t) => {
  const { connect: tlsConnect } = await import('node:tls')
  const { connect: h2connect } = await import('node:http2')
  const b = await silentBackend(t)
  const r = await startRouter(t, uploadObjects(b, { 'nginx.ingress.kubernetes.io/client-body-timeout': '1' }), {
    options: { https: { host: '127.0.0.1', port: 0 } },
  })
  const port = r.https!.port
  // HTTP/1.1 over TLS: 10 of 100 bytes, then silence.
  const s = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] })
  s.on('error', () => {})
  t.teardown(() => s.destroy())
  await new Promise<void>((res) => s.once('secureConnect', () => res()))
  let out = ''
  s.setEncoding('latin1')
  s.on('data', (d: string) => (out += d))
  s.write(postHead('up.test', 100) + 'x'.repeat(10))
  await eventually(() => out.length > 0, 8000).catch(() => {})
  t.match(out, /^HTTP\/1\.1 408 /, 'HTTP/1.1: 408')
  // HTTP/2: a stream whose body stops.
  const session = h2connect(`https://127.0.0.1:${port}`, { rejectUnauthorized: false })
  session.on('error', () => {})
  t.teardown(() => session.destroy())
  const stream = session.request({
    ':method': 'POST',
    ':path': '/up',
    ':authority': 'up.test',
    'content-length': '100',
  })
  stream.on('error', () => {})
  stream.write('x'.repeat(10))
  const status = await new Promise<number>((res) => {
    stream.once('response', (h) => res(Number(h[':status'])))
    setTimeout(() => res(0), 8000).unref()
  })
  t.equal(status, 408, 'HTTP/2: 408')
  await eventually(() => b.open() === 0, 3000).catch(() => {})
  t.equal(b.open(), 0, 'the upstream connections are closed')
})

t.test('https listener: a full pool answers 503 after proxy-connect-timeout', async (t) => {
  const { connect: h2connect } = await import('node:http2')
  const b = await silentBackend(t)
  const r = await startRouter(t, uploadObjects(b, { 'nginx.ingress.kubernetes.io/proxy-connect-timeout': '1' }), {
    options: { https: { host: '127.0.0.1', port: 0 } },
  })
  // 258 HTTP/2 streams over 3 sessions (100 concurrent streams each at most): 256 fill the endpoint's pool.
  const statuses: number[] = []
  for (let s = 0; s < 3; s++) {
    const session = h2connect(`https://127.0.0.1:${r.https!.port}`, { rejectUnauthorized: false })
    session.on('error', () => {})
    t.teardown(() => session.destroy())
    for (let i = 0; i < 86; i++) {
      const stream = session.request({ ':path': `/held/${s}/${i}`, ':authority': 'up.test' })
      stream.on('error', () => {})
      stream.on('response', (h) => statuses.push(Number(h[':status'])))
      stream.end()
    }
  }
  await eventually(() => statuses.length >= 2, 8000).catch(() => {})
  t.same(statuses, [503, 503], 'the two requests beyond the pool get 503; the others still wait for the endpoint')
  t.equal(b.open(), 256, 'the endpoint holds the pool')
})
