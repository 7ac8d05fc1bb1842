// HTTP/2 to clients by ALPN on the https listener (node:http2 with allowHTTP1): the same routing, headers and
// errors as HTTP/1.1, bodies both ways, HTTP/1.1 and WebSocket still served on the same port; checked with node:http2
// and with curl --http2.

import t from 'tap'
import { execFile } from 'node:child_process'
import type { AddressInfo } from 'node:net'
import { connect as h2connect, type ClientHttp2Session, type IncomingHttpHeaders } from 'node:http2'
import { WebSocketServer, WebSocket } from 'ws'
import type { KubeObject } from '../../model/objects.ts'
import {
  echoBackend,
  get,
  ingress,
  makeCert,
  pod,
  service,
  startRouter,
  tlsSecret,
  type Router,
  type Teardown,
} from './helpers.ts'

const base = 150 + (process.pid % 50)

interface H2Response {
  status: number
  headers: IncomingHttpHeaders
  body: string
}

function h2request(
  session: ClientHttp2Session,
  headers: Record<string, string | string[]>,
  body?: string | Buffer,
): Promise<H2Response> {
  return new Promise((resolve, reject) => {
    const req = session.request(headers, { endStream: body === undefined })
    let status = 0
    let rh: IncomingHttpHeaders = {}
    let text = ''
    req.on('response', (h) => {
      rh = h
      status = Number(h[':status'])
    })
    req.setEncoding('utf8')
    req.on('data', (c: string) => (text += c))
    req.on('end', () => resolve({ status, headers: rh, body: text }))
    req.on('error', reject)
    if (body !== undefined) req.end(body)
  })
}

async function setup(
  t: Teardown,
  n: number,
): Promise<{ r: Router; cert: string; session: ClientHttp2Session; objects: KubeObject[] }> {
  const cert = await makeCert('h2.test')
  const a = await echoBackend(t, 'web', `127.6.${base}.${n}`)
  const objects: KubeObject[] = [
    service('web'),
    pod('a', 'web', a.host, a.port),
    service('empty'),
    tlsSecret('h2-tls', cert.cert, cert.key),
  ]
  const r = await startRouter(
    t,
    [
      ...objects,
      ingress(
        'h2',
        [
          {
            host: 'h2.test',
            paths: [
              ['/', 'Prefix', 'web'],
              ['/empty', 'Prefix', 'empty'],
            ],
          },
        ],
        {
          tls: [{ hosts: ['h2.test'], secretName: 'h2-tls' }],
        },
      ),
    ],
    { options: { https: { host: '127.0.0.1', port: 0 } } },
  )
  const session = h2connect(`https://127.0.0.1:${r.https!.port}`, { ca: cert.cert, servername: 'h2.test' })
  await new Promise<void>((resolve, reject) => {
    session.once('connect', () => resolve())
    session.once('error', reject)
  })
  t.teardown(() => session.destroy())
  return { r, cert: cert.cert, session, objects }
}

t.test('HTTP/2 by ALPN: routing, normalisation, forwarded headers, errors', async (t) => {
  const { session } = await setup(t, 1)
  t.equal(session.alpnProtocol, 'h2', 'ALPN chose h2')

  const ok = await h2request(session, {
    ':path': '/a/../b/%7Ex?q=1',
    ':authority': 'H2.test:443',
    cookie: ['a=1', 'b=2'],
    'x-custom': 'v',
  })
  t.equal(ok.status, 200)
  t.match(ok.headers['x-request-id'], /^[0-9a-f]{32}$/)
  t.equal(ok.headers.connection, undefined, 'no connection-specific header in an HTTP/2 response')
  const echo = JSON.parse(ok.body)
  t.equal(echo.url, '/b/~x?q=1', 'the normalised path is forwarded')
  t.equal(echo.httpVersion, '1.1', 'the endpoint is spoken to in HTTP/1.1')
  t.equal(echo.headers.host, 'H2.test:443', ':authority becomes Host, unchanged')
  t.equal(echo.headers['x-forwarded-proto'], 'https')
  t.equal(echo.headers['x-forwarded-host'], 'H2.test:443')
  t.equal(echo.headers['x-forwarded-for'], '127.0.0.1')
  t.equal(echo.headers.cookie, 'a=1; b=2', 'cookie fields are joined for HTTP/1.1')
  t.equal(echo.headers['x-custom'], 'v')
  t.notOk(
    echo.rawHeaders.some((h: string) => h.startsWith(':')),
    'no pseudo-header reaches the endpoint',
  )

  const post = await h2request(
    session,
    { ':method': 'POST', ':path': '/upload', ':authority': 'h2.test', 'content-length': '5' },
    'hello',
  )
  t.equal(JSON.parse(post.body).body, 'hello', 'a body with content-length')
  const streamed = await h2request(
    session,
    { ':method': 'POST', ':path': '/upload', ':authority': 'h2.test' },
    Buffer.alloc(100_000, 120),
  )
  t.equal(JSON.parse(streamed.body).body.length, 100_000, 'a body without content-length (sent chunked upstream)')

  t.equal((await h2request(session, { ':path': '/x', ':authority': 'nothing.test' })).status, 404, 'no route: 404')
  t.equal((await h2request(session, { ':path': '/empty', ':authority': 'h2.test' })).status, 503, 'no endpoints: 503')
  t.equal((await h2request(session, { ':path': '/a%zz', ':authority': 'h2.test' })).status, 400, 'bad escape: 400')
  t.equal(
    (await h2request(session, { ':method': 'TRACE', ':path': '/', ':authority': 'h2.test' })).status,
    405,
    'TRACE: 405',
  )
})

t.test('curl --http2 negotiates HTTP/2; HTTP/1.1 and WebSocket still work on the same port', async (t) => {
  const { r, cert, objects } = await setup(t, 2)
  const port = r.https!.port
  const caFile = `${t.testdir({ 'ca.pem': cert })}/ca.pem`
  const out = await new Promise<string>((resolve, reject) =>
    execFile(
      'curl',
      [
        '-sS',
        '--http2',
        '--cacert',
        caFile,
        '--resolve',
        `h2.test:${port}:127.0.0.1`,
        '-o',
        '/dev/null',
        '-w',
        '%{http_version} %{http_code}',
        `https://h2.test:${port}/hello`,
      ],
      { timeout: 10000 },
      (err, stdout) => (err ? reject(err) : resolve(stdout)),
    ),
  )
  t.equal(out, '2 200', 'curl used HTTP/2 and got 200')
  const h1 = await new Promise<string>((resolve, reject) =>
    execFile(
      'curl',
      [
        '-sS',
        '--http1.1',
        '--cacert',
        caFile,
        '--resolve',
        `h2.test:${port}:127.0.0.1`,
        '-o',
        '/dev/null',
        '-w',
        '%{http_version} %{http_code}',
        `https://h2.test:${port}/hello`,
      ],
      { timeout: 10000 },
      (err, stdout) => (err ? reject(err) : resolve(stdout)),
    ),
  )
  t.equal(h1, '1.1 200', 'HTTP/1.1 by ALPN on the same listener')

  // WebSocket over TLS (wss) stays HTTP/1.1.
  const wsHost = `127.6.${base}.3`
  const wss = new WebSocketServer({ host: wsHost, port: 0 })
  await new Promise((res) => wss.once('listening', res))
  t.teardown(() => new Promise((res) => wss.close(res)))
  wss.on('connection', (ws) => ws.on('message', (m) => ws.send(`echo:${m}`)))
  const wsPort = (wss.address() as AddressInfo).port
  r.set([
    ...objects,
    service('ws'),
    pod('ws-1', 'ws', wsHost, wsPort),
    ingress(
      'h2',
      [
        {
          host: 'h2.test',
          paths: [
            ['/', 'Prefix', 'web'],
            ['/socket', 'Prefix', 'ws'],
          ],
        },
      ],
      {
        tls: [{ hosts: ['h2.test'], secretName: 'h2-tls' }],
      },
    ),
  ])
  const ws = new WebSocket(`wss://127.0.0.1:${port}/socket`, {
    headers: { host: 'h2.test' },
    servername: 'h2.test',
    ca: cert,
  } as ConstructorParameters<typeof WebSocket>[2])
  await new Promise((res, rej) => {
    ws.once('open', res)
    ws.once('error', rej)
  })
  const got = new Promise<string>((res) => ws.once('message', (m) => res(String(m))))
  ws.send('hi')
  t.equal(await got, 'echo:hi', 'wss through the https listener')
  ws.close()
  void get
})
