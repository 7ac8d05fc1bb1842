// httpGet against real servers, one attempt at a time: status ranges, redirects, headers, fresh connections, bounded
// bodies, timeouts and HTTPS with a self-signed certificate made by openssl (specs/l4-health.md §6.2).

import t from 'tap'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { HttpProbe, type HttpProbeSpec } from '../../health/handlers/http.ts'
import { httpBackend } from './helpers.ts'

const spec = (port: number, path = '/', extra: Partial<HttpProbeSpec> = {}): HttpProbeSpec => ({
  scheme: 'HTTP',
  host: '127.0.0.1',
  port,
  path,
  httpHeaders: [],
  ...extra,
})

t.test('status 200..399 is success, 400 and up is failure with kubelet message', async (t) => {
  const b = await httpBackend(t)
  for (const [status, ok] of [
    [200, true],
    [204, true],
    [301, true],
    [399, true],
    [400, false],
    [404, false],
    [500, false],
    [503, false],
  ] as const) {
    b.status = status
    b.handler = (req, res) => {
      // A 301 without Location is an answer in itself (Go does not follow it).
      res.writeHead(b.status)
      res.end()
      return true
    }
    const r = await new HttpProbe(spec(b.port)).run(1000)
    t.equal(r.ok, ok, `status ${status}`)
    if (!ok) t.equal(r.message, `HTTP probe failed with statuscode: ${status}`)
  }
})

t.test('default headers, user headers, Host override, Connection: close and a new connection every time', async (t) => {
  const b = await httpBackend(t)
  await new HttpProbe(spec(b.port, '/healthz?x=1')).run(1000)
  await new HttpProbe(spec(b.port, '/healthz?x=1')).run(1000)
  const [r1, r2] = b.requests
  t.equal(r1!.url, '/healthz?x=1')
  t.equal(r1!.method, 'GET')
  t.equal(r1!.headers['user-agent'], 'kube-probe/1.34')
  t.equal(r1!.headers.accept, '*/*')
  t.equal(r1!.headers.connection, 'close')
  t.equal(r1!.headers.host, `127.0.0.1:${b.port}`)
  t.equal(r2?.url, '/healthz?x=1', 'the second probe sends the same request')
  t.not(b.remotePorts[0], b.remotePorts[1], 'fresh connection per probe')

  const p = new HttpProbe(
    spec(b.port, 'no-slash', {
      httpHeaders: [
        { name: 'X-Custom', value: 'a' },
        { name: 'X-Custom', value: 'b' },
        { name: 'Host', value: 'probe.example' },
        { name: 'User-Agent', value: '' },
        { name: 'Accept', value: 'application/json' },
      ],
    }),
  )
  t.ok((await p.run(1000)).ok)
  const r3 = b.requests[2]!
  t.equal(r3.url, '/no-slash', 'a path without a leading slash gets one')
  t.equal(r3.headers['x-custom'], 'a, b', 'repeated headers are all sent')
  t.equal(r3.headers.host, 'probe.example')
  t.equal(r3.headers['user-agent'], undefined, 'an empty User-Agent removes the default')
  t.equal(r3.headers.accept, 'application/json')
})

t.test(
  'redirects: same host followed, other host is a success with a warning, more than 10 is a failure',
  async (t) => {
    const b = await httpBackend(t)
    let hops = 0
    b.handler = (req, res) => {
      const u = req.url!
      if (u === '/to-bad') res.writeHead(302, { location: '/bad' }).end()
      else if (u === '/to-good') res.writeHead(301, { location: `http://127.0.0.1:${b.port}/good` }).end()
      else if (u === '/bad') res.writeHead(500).end()
      else if (u === '/good') res.writeHead(200).end('fine')
      else if (u === '/elsewhere') res.writeHead(302, { location: `http://localhost:${b.port}/bad` }).end()
      else if (u.startsWith('/loop')) {
        hops++
        res.writeHead(307, { location: `/loop${hops}` }).end()
      } else res.writeHead(404).end()
      return true
    }
    const bad = await new HttpProbe(spec(b.port, '/to-bad')).run(1000)
    t.equal(bad.ok, false, 'redirect followed to a 500')
    t.equal(bad.message, 'HTTP probe failed with statuscode: 500')
    t.ok((await new HttpProbe(spec(b.port, '/to-good')).run(1000)).ok, 'redirect followed to a 200')
    const other = await new HttpProbe(spec(b.port, '/elsewhere')).run(1000)
    t.equal(other.ok, true, 'another host: not followed, success')
    t.equal(other.warning, true, 'with a warning')
    t.notOk(
      b.requests.some((r) => r.headers.host?.startsWith('localhost')),
      'the other host was never asked',
    )
    const loop = await new HttpProbe(spec(b.port, '/loop')).run(2000)
    t.equal(loop.ok, false)
    t.match(loop.message, /stopped after 10 redirects/)
    t.equal(hops, 11, 'the original request and 10 followed redirects')
  },
)

t.test('a timeout is a failure; a body over 10 KiB is read no further and is not a failure', async (t) => {
  const b = await httpBackend(t)
  b.mode = 'hang'
  const t0 = Date.now()
  const r = await new HttpProbe(spec(b.port)).run(300)
  t.equal(r.ok, false)
  t.equal(r.code, 'MLT_HEALTH_TIMEOUT')
  t.ok(Date.now() - t0 < 1000, 'gave up at the timeout')
  // Headers then a body that never ends: the timeout covers the body too.
  b.mode = 'ok'
  b.handler = (req, res) => {
    if (req.url === '/slow-body') {
      res.writeHead(200, { 'content-length': '100' })
      res.write('partial')
      return true
    }
    res.writeHead(200)
    res.end(Buffer.alloc(1024 * 1024, 'x'))
    return true
  }
  const slow = await new HttpProbe(spec(b.port, '/slow-body')).run(300)
  t.equal(slow.ok, false, 'a body that stalls is a timeout')
  const big = await new HttpProbe(spec(b.port, '/big')).run(2000)
  t.equal(big.ok, true, '1 MiB body: success')
})

t.test('connection refused is a failure', async (t) => {
  const b = await httpBackend(t)
  const port = b.port
  await new Promise<void>((r) => b.server.close(() => r()))
  const r = await new HttpProbe(spec(port)).run(1000)
  t.equal(r.ok, false)
  t.equal(r.code, 'MLT_HEALTH_CONNECT')
  t.match(r.message, /connection refused/)
})

t.test('HTTPS with a self-signed certificate: the certificate is not checked', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'meshlet-health-tls-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '1',
      '-subj',
      '/CN=probe.test',
      '-keyout',
      join(dir, 'key.pem'),
      '-out',
      join(dir, 'cert.pem'),
    ],
    { stdio: 'ignore' },
  )
  let last = ''
  const server = createHttpsServer(
    { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) },
    (req, res) => {
      last = req.url!
      res.writeHead(req.url === '/fail' ? 503 : 200).end()
    },
  )
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(
    () =>
      new Promise<void>((r) => {
        server.closeAllConnections()
        server.close(() => r())
      }),
  )
  const port = (server.address() as AddressInfo).port
  const ok = await new HttpProbe(spec(port, '/healthz', { scheme: 'HTTPS' })).run(2000)
  t.equal(ok.ok, true, ok.message)
  t.equal(last, '/healthz')
  const fail = await new HttpProbe(spec(port, '/fail', { scheme: 'HTTPS' })).run(2000)
  t.equal(fail.ok, false)
  t.equal(fail.message, 'HTTP probe failed with statuscode: 503')
  const plain = await new HttpProbe(spec(port, '/healthz', { scheme: 'HTTP' })).run(1000)
  t.equal(plain.ok, false, 'plain HTTP to a TLS port fails')
})
