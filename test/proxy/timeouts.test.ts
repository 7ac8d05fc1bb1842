// proxy-send-timeout (ingress-nginx: the time allowed between two successive writes to the upstream): an endpoint
// that stops reading a request body fails the request with 504 after the timeout; a client that is slow to send is
// not the endpoint's fault and is not cut. Run on both listeners (raw HTTP/1.1 engine on http, node:http2 + undici
// on https).

import t from 'tap'
import { connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { echoBackend, ingress, pod, service, startRouter, type Router } from './helpers.ts'

const base = 200 + (process.pid % 50)

type Dial = (r: Router) => Socket

const listeners: [string, Dial][] = [
  ['http (raw engine)', (r) => netConnect(r.http.port, r.http.host)],
  [
    'https (node:http2 + undici)',
    (r) => tlsConnect({ host: '127.0.0.1', port: r.https!.port, servername: 'h', rejectUnauthorized: false }),
  ],
]

/** Sends a request head declaring `total` body bytes, then body as fast as the socket takes it until an answer comes. */
function floodUntilAnswer(sock: Socket, total: number, timeoutMs: number): Promise<string> {
  return new Promise((resolve) => {
    let out = ''
    let sent = 0
    let answered = false
    const chunk = Buffer.alloc(256 * 1024, 120)
    const timer = setTimeout(() => finish(), timeoutMs)
    const finish = () => {
      clearTimeout(timer)
      sock.destroy()
      resolve(out)
    }
    const pump = () => {
      while (!answered && sent < total) {
        sent += chunk.length
        if (!sock.write(chunk)) return void sock.once('drain', pump)
      }
    }
    sock.setEncoding('latin1')
    sock.on('data', (d: string) => {
      answered = true
      out += d
      if (out.includes('\r\n\r\n')) finish()
    })
    sock.on('error', () => {})
    sock.on('close', finish)
    sock.write(`POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: ${total}\r\n\r\n`)
    pump()
  })
}

for (const [i, [name, dial]] of listeners.entries()) {
  t.test(`proxy-send-timeout on ${name}`, async (t) => {
    const stuck = await echoBackend(t, 'stuck', `127.7.${base}.${1 + 2 * i}`)
    // Reads nothing and never answers: its receive window fills up.
    stuck.handler = (req) => req.pause()
    const slow = await echoBackend(t, 'slow', `127.7.${base}.${2 + 2 * i}`)
    const r = await startRouter(
      t,
      [
        service('stuck'),
        pod('stuck-1', 'stuck', stuck.host, stuck.port),
        service('slow'),
        pod('slow-1', 'slow', slow.host, slow.port),
        ingress(
          'send',
          [
            {
              host: 'h',
              paths: [
                ['/up', 'Prefix', 'stuck'],
                ['/slow', 'Prefix', 'slow'],
              ],
            },
          ],
          {
            annotations: {
              'nginx.ingress.kubernetes.io/proxy-send-timeout': '1',
              'nginx.ingress.kubernetes.io/proxy-body-size': '0',
            },
          },
        ),
      ],
      { options: { https: { host: '127.0.0.1', port: 0 } } },
    )
    const t0 = Date.now()
    const out = await floodUntilAnswer(dial(r), 512 * 1024 * 1024, 20000)
    t.match(out, /^HTTP\/1\.1 504 /, 'an endpoint that stops reading the body: 504')
    t.ok(Date.now() - t0 < 15000, `answered in ${Date.now() - t0} ms`)
    t.equal(stuck.count, 1, 'not retried: the body was partly sent')

    // A client pausing longer than the send timeout between two body writes is not cut.
    const sock = dial(r)
    const answer = new Promise<string>((resolve) => {
      let buf = ''
      sock.setEncoding('latin1')
      sock.on('data', (d: string) => (buf += d))
      sock.on('close', () => resolve(buf))
      sock.on('error', () => {})
    })
    sock.write('POST /slow HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\nConnection: close\r\n\r\nhello')
    await new Promise((res) => setTimeout(res, 1600))
    sock.write('world')
    const text = await answer
    t.match(text, /^HTTP\/1\.1 200 /, 'a slow client is not a send timeout')
    t.match(text, /"body":"helloworld"/)
  })
}
