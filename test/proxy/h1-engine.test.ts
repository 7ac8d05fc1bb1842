// The http listener's HTTP/1.1 framing, on every engine: framing both ways, pipelining, Expect, HEAD, HTTP/1.0
// clients, upstream keep-alive reuse. (Smuggling and normalisation cases are in forwarding.test.ts.)

import t from 'tap'
import { echoBackend, ingress, pod, rawRequest, service, startRouter, engineTest } from './helpers.ts'

const base = 10 + (process.pid % 50)

engineTest(t, 'framing and connection handling', async (t) => {
  const web = await echoBackend(t, 'web', `127.8.${base}.1`)
  let connections = 0
  web.server.on('connection', () => connections++)
  const chunky = await echoBackend(t, 'chunky', `127.8.${base}.2`)
  // No Content-Length: the endpoint's response is chunked (HTTP/1.1 client) or close-delimited (HTTP/1.0 client).
  chunky.handler = (_req, res) => {
    res.writeHead(200, {
      'content-type': 'text/plain',
      'x-upstream': 'yes',
      connection: 'keep-alive',
      'keep-alive': 'timeout=5',
    })
    res.write('part1-')
    setTimeout(() => res.end('part2'), 20)
  }
  const r = await startRouter(t, [
    service('web'),
    pod('w', 'web', web.host, web.port),
    service('chunky'),
    pod('c', 'chunky', chunky.host, chunky.port),
    ingress('i', [
      {
        host: 'h',
        paths: [
          ['/', 'Prefix', 'web'],
          ['/chunky', 'Prefix', 'chunky'],
        ],
      },
    ]),
  ])

  // Pipelining: three requests in one write, answered in order on one connection.
  const piped = await rawRequest(
    r.http,
    'GET /one HTTP/1.1\r\nHost: h\r\n\r\nPOST /two HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET /three HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n',
  )
  const urls = [...piped.matchAll(/"url":"([^"]+)"/g)].map((m) => m[1])
  t.same(urls, ['/one', '/two', '/three'], 'pipelined requests answered in order')
  t.match(piped, /"body":"abc"/)
  t.equal(piped.match(/HTTP\/1\.1 200/g)?.length, 3)

  // Expect: 100-continue is answered by the router; the endpoint never sees Expect.
  const cont = await rawRequest(
    r.http,
    'POST /e HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nExpect: 100-continue\r\nConnection: close\r\n\r\nok',
  )
  t.match(cont, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 /)
  t.notMatch(cont, /"expect"/)
  const bad = await rawRequest(
    r.http,
    'POST /e HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nExpect: something\r\n\r\nok',
  )
  t.match(bad, /^HTTP\/1\.1 417 /)

  // HEAD: the endpoint's Content-Length is kept, no body follows.
  const head = await rawRequest(r.http, 'HEAD /h HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n')
  t.match(head, /^HTTP\/1\.1 200 /)
  t.match(head, /content-length: \d+/i)
  t.ok(head.endsWith('\r\n\r\n'), 'no body after a HEAD response')

  // An endpoint response without length: chunked to an HTTP/1.1 client, hop-by-hop headers removed.
  const ch = await rawRequest(r.http, 'GET /chunky HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n')
  t.match(ch, /transfer-encoding: chunked/i)
  t.match(ch, /x-upstream: yes/)
  t.notMatch(ch, /keep-alive: timeout/i, 'the endpoint’s Keep-Alive is hop-by-hop')
  t.match(ch, /\r\n6\r\npart1-\r\n5\r\npart2\r\n0\r\n\r\n$/)
  // …and close-delimited to an HTTP/1.0 client.
  const ch10 = await rawRequest(r.http, 'GET /chunky HTTP/1.0\r\nHost: h\r\n\r\n')
  t.notMatch(ch10, /transfer-encoding/i)
  t.match(ch10, /connection: close/i)
  t.ok(ch10.endsWith('\r\n\r\npart1-part2'))

  // HTTP/1.0 with keep-alive: two requests on one connection.
  const ka10 = await rawRequest(r.http, 'GET /a HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n', 500)
  t.match(ka10, /connection: keep-alive/i)
  t.match(ka10, /"url":"\/a"/)

  // Upstream connections are reused: sequential requests do not open new ones.
  const before = connections
  for (let i = 0; i < 20; i++)
    await rawRequest(r.http, `GET /seq/${i} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n`)
  t.ok(connections - before <= 1, `20 sequential requests used ${connections - before} new upstream connection(s)`)
})
