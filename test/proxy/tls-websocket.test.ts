// TLS termination with certificates chosen by SNI (two hosts, certificates made with openssl here), the generated
// default certificate, ssl-redirect 308, and WebSocket upgrades through the router (ws).

import t from 'tap'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { request as httpsRequest } from 'node:https'
import { tmpdir } from 'node:os'
import type { AddressInfo } from 'node:net'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { WebSocketServer, WebSocket } from 'ws'
import { pollUntil } from '../helpers/wait.ts'
import { echoBackend, get, ingress, pod, rawRequest, service, startRouter, tlsSecret } from './helpers.ts'

const base = 100 + (process.pid % 50)

function makeCert(host: string): { cert: string; key: string } {
  const dir = mkdtempSync(`${tmpdir()}/meshlet-tls-`)
  try {
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
        `${dir}/key.pem`,
        '-out',
        `${dir}/cert.pem`,
        '-days',
        '2',
        '-subj',
        `/CN=${host}`,
        '-addext',
        `subjectAltName=DNS:${host}`,
      ],
      { stdio: 'ignore' },
    )
    return { cert: readFileSync(`${dir}/cert.pem`, 'utf8'), key: readFileSync(`${dir}/key.pem`, 'utf8') }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

function httpsGet(
  port: number,
  servername: string,
  ca: string | null,
  path = '/',
): Promise<{ status: number; body: string; subject: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port,
        path,
        servername,
        headers: { host: servername },
        ca: ca ?? undefined,
        rejectUnauthorized: ca !== null,
        agent: false,
      },
      (res) => {
        let body = ''
        res.setEncoding('utf8').on('data', (c: string) => (body += c))
        const cert = (res.socket as TLSSocket).getPeerCertificate()
        res.on('end', () => resolve({ status: res.statusCode!, body, subject: String(cert.subject?.CN) }))
      },
    )
    req.on('error', reject)
    req.end()
  })
}

t.test('TLS: two hosts by SNI, default certificate otherwise, ssl-redirect 308', async (t) => {
  const one = makeCert('foo.bar.com')
  const two = makeCert('two.example.com')
  const a = await echoBackend(t, 'foo-bar-com', `127.5.${base}.1`)
  const b = await echoBackend(t, 'two', `127.5.${base}.2`)
  const r = await startRouter(
    t,
    [
      service('foo-bar-com'),
      pod('a', 'foo-bar-com', a.host, a.port),
      service('two'),
      pod('b', 'two', b.host, b.port),
      tlsSecret('foo-tls', one.cert, one.key),
      tlsSecret('two-tls', two.cert, two.key),
      ingress('host-rules', [{ host: 'foo.bar.com', paths: [['/', 'Prefix', 'foo-bar-com', 'http']] }], {
        tls: [{ hosts: ['foo.bar.com'], secretName: 'foo-tls' }],
      }),
      ingress('two', [{ host: 'two.example.com', paths: [['/', 'Prefix', 'two']] }], {
        tls: [{ hosts: ['two.example.com'], secretName: 'two-tls' }],
        annotations: { 'nginx.ingress.kubernetes.io/ssl-redirect': 'false' },
      }),
      ingress('plain', [{ host: 'plain.example.com', paths: [['/', 'Prefix', 'two']] }], {
        annotations: { 'nginx.ingress.kubernetes.io/force-ssl-redirect': 'true' },
      }),
    ],
    { options: { https: { host: '127.0.0.1', port: 0 } } },
  )
  const port = r.https!.port
  const foo = await httpsGet(port, 'foo.bar.com', one.cert)
  t.equal(foo.status, 200, 'certificate verifies for foo.bar.com')
  t.equal(JSON.parse(foo.body).server, 'foo-bar-com')
  t.equal(JSON.parse(foo.body).headers['x-forwarded-proto'], 'https')
  const second = await httpsGet(port, 'two.example.com', two.cert)
  t.equal(second.status, 200, 'certificate verifies for two.example.com')
  t.equal(JSON.parse(second.body).server, 'two')
  const other = await httpsGet(port, 'unknown.example.com', null)
  t.equal(other.subject, 'meshlet default certificate', 'unknown SNI gets the generated default certificate')
  t.equal(other.status, 404)

  // HTTP listener: TLS host → 308 to https with the https port, path and query kept (trailing slash too)
  const red = await get(r, 'foo.bar.com:1234', '/a/b/?x=1')
  t.equal(red.status, 308)
  t.equal(red.headers.location, `https://foo.bar.com:${port}/a/b/?x=1`)
  t.equal((await get(r, 'two.example.com', '/')).status, 200, 'ssl-redirect: "false" serves HTTP')
  const forced = await get(r, 'plain.example.com', '/p')
  t.equal(forced.status, 308, 'force-ssl-redirect without TLS')
  t.equal(a.count, 1, 'the redirected request never reached the backend')
})

t.test('HTTPS listener is up with only the generated certificate (no Secret yet)', async (t) => {
  const r = await startRouter(t, [], { options: { https: { host: '127.0.0.1', port: 0 } } })
  const res = await new Promise<string>((resolve, reject) => {
    const s = tlsConnect(
      { host: '127.0.0.1', port: r.https!.port, servername: 'x.test', rejectUnauthorized: false },
      () => {
        resolve(String(s.getPeerCertificate().subject.CN))
        s.end()
      },
    )
    s.on('error', reject)
  })
  t.equal(res, 'meshlet default certificate')
  t.equal(r.status().listeners.https?.state, 'listening')
  t.equal(r.plane.ready(), true)
})

t.test('WebSocket through the router: echo, headers, idle tunnel kept, close', async (t) => {
  const backendHost = `127.5.${base}.3`
  const wss = new WebSocketServer({ host: backendHost, port: 0 })
  await new Promise((r) => wss.once('listening', r))
  t.teardown(() => new Promise((r) => wss.close(r)))
  let upgradeHeaders: Record<string, unknown> = {}
  wss.on('connection', (ws, req) => {
    upgradeHeaders = req.headers
    ws.on('message', (m) => ws.send(`echo:${m}`))
  })
  const wsPort = (wss.address() as AddressInfo).port
  const r = await startRouter(t, [
    service('ws'),
    pod('ws-1', 'ws', backendHost, wsPort),
    ingress('ws', [{ host: 'ws.test', paths: [['/socket', 'Prefix', 'ws']] }], {
      annotations: { 'nginx.ingress.kubernetes.io/proxy-read-timeout': '1' },
    }),
  ])
  const ws = new WebSocket(`ws://127.0.0.1:${r.http.port}/socket/x?y=1`, { headers: { host: 'ws.test' } })
  await new Promise((res, rej) => {
    ws.once('open', res)
    ws.once('error', rej)
  })
  const messages: string[] = []
  ws.on('message', (m) => messages.push(String(m)))
  ws.send('hello')
  await pollUntil(
    () => messages.length,
    (n) => n >= 1,
    5000,
  )
  t.same(messages, ['echo:hello'])
  t.equal(upgradeHeaders['x-forwarded-for'], '127.0.0.1')
  t.equal(upgradeHeaders.host, 'ws.test')
  t.equal(r.status().tunnels, 1)
  // Traffic every 400 ms keeps a tunnel with a 1 s idle limit open for 2 s.
  for (let i = 0; i < 5; i++) {
    await new Promise((res) => setTimeout(res, 400))
    ws.send(`m${i}`)
  }
  await pollUntil(
    () => messages.length,
    (n) => n >= 6,
    5000,
  )
  t.equal(ws.readyState, WebSocket.OPEN, 'an active tunnel is not cut by the idle limit')
  t.equal(messages.length, 6)
  // Idle for longer than the limit: closed.
  const closed = new Promise((res) => ws.once('close', res))
  await closed
  t.pass('an idle tunnel is closed after proxy-read-timeout')
  t.equal(r.status().tunnels, 0)

  const notFound = await rawRequest(
    r.http,
    'GET /elsewhere HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
    1000,
  )
  t.match(notFound, /^HTTP\/1\.1 404/, 'an upgrade request without a route gets 404')
})
