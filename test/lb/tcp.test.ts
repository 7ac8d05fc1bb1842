// TCP forwarding through `meshlet up` (specs/l4-health.md §3.5): half-close both ways, a large transfer with
// backpressure (meshlet's memory stays flat while a backend does not read), connections surviving a reload and the
// removal of their endpoint, and the retry to another endpoint when one refuses.

import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { connect, createServer, type Socket } from 'node:net'
import { startMeshlet } from '../helpers/meshlet.ts'
import {
  clusterIP,
  connectAndIdentify,
  endpointsYaml,
  identify,
  identifyServer,
  lbPorts,
  netOf,
  sleep,
  svcStatus,
  waitListener,
} from './helpers.ts'

const net = netOf(1)

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Number(m[1]) : 0
}

t.test('TCP forwarding through meshlet up', { timeout: 80_000 }, async (t) => {
  // Half-close backend: reads until FIN, then answers with what it counted and closes its side.
  const hcIp = net.ip(201)
  const hc = createServer({ allowHalfOpen: true }, (s) => {
    let n = 0
    s.on('data', (c) => (n += c.length))
    s.on('end', () => {
      s.write(`got ${n} bytes after your FIN`)
      s.end()
    })
    s.on('error', () => {})
  })
  await new Promise<void>((r) => hc.listen(0, hcIp, () => r()))
  const hcPort = (hc.address() as { port: number }).port
  t.teardown(() => new Promise((r) => hc.close(r)))

  // Bulk backend: hashes what it receives; pauses reading when told, and resumes on a later signal.
  const bulkIp = net.ip(202)
  const bulkSockets = new Set<Socket>()
  const bulk = createServer((s) => {
    bulkSockets.add(s)
    s.on('close', () => bulkSockets.delete(s))
    s.on('error', () => {})
  })
  await new Promise<void>((r) => bulk.listen(0, bulkIp, () => r()))
  const bulkPort = (bulk.address() as { port: number }).port
  t.teardown(
    () =>
      new Promise((r) => {
        for (const s of bulkSockets) s.destroy()
        bulk.close(r)
      }),
  )

  const keepA = await identifyServer(t, net.ip(211))
  const keepB = await identifyServer(t, net.ip(212), keepA.port)
  // Retry: .221 has nothing listening on the port that .222 serves.
  const live = await identifyServer(t, net.ip(222))

  const services = (extra = '') => `apiVersion: v1
kind: Service
metadata: { name: hc }
spec: { ports: [{ port: 80 }] }
---
apiVersion: v1
kind: Service
metadata: { name: bulk }
spec: { ports: [{ port: 80 }] }
---
apiVersion: v1
kind: Service
metadata: { name: keep }
spec: { ports: [{ port: 80 }] }
---
apiVersion: v1
kind: Service
metadata: { name: retry }
spec: { ports: [{ port: 80 }] }
${extra}`
  const m = await startMeshlet(t, {
    manifests: {
      'services.yaml': services(),
      'hc.yaml': endpointsYaml('hc', [{ port: hcPort }], [hcIp]),
      'bulk.yaml': endpointsYaml('bulk', [{ port: bulkPort }], [bulkIp]),
      'keep.yaml': endpointsYaml('keep', [{ port: keepA.port }], [net.ip(211)]),
      'retry.yaml': endpointsYaml('retry', [{ port: live.port }], [net.ip(221), net.ip(222)]),
    },
    args: ['--service-cidr', net.serviceCidr, '--node-address', net.ip(240)],
  })
  const hcVip = await clusterIP(m, 'default/hc')
  const bulkVip = await clusterIP(m, 'default/bulk')
  const keepVip = await clusterIP(m, 'default/keep')
  const retryVip = await clusterIP(m, 'default/retry')
  for (const k of ['hc', 'bulk', 'keep', 'retry']) await waitListener(m, `default/${k}`, (l) => l.state === 'open')

  await t.test('half-close: the client’s FIN reaches the backend, which still answers', async (t) => {
    const s = connect({ host: hcVip, port: 80, allowHalfOpen: true })
    let reply = ''
    const ended = new Promise<void>((r) => s.on('end', () => r()))
    s.on('data', (c) => (reply += c))
    await new Promise<void>((r) => s.once('connect', () => r()))
    s.write(Buffer.alloc(1000, 1))
    s.end()
    await ended
    t.equal(reply, 'got 1000 bytes after your FIN', 'backend saw the FIN and its reply came back after it')
    s.destroy()
  })

  await t.test('large transfer with backpressure: intact, and meshlet does not buffer it', async (t) => {
    // 160 MiB: more than the kernel's socket buffers on both legs can hold (tcp_rmem max is often 32 MiB), so
    // without backpressure meshlet would have to hold the rest in its own memory while the backend does not read.
    const chunks = 160
    const base = randomBytes(1 << 20)
    const chunk = (i: number) => {
      const b = Buffer.from(base)
      b.writeUInt32BE(i, 0)
      return b
    }
    const hash = createHash('sha256')
    for (let i = 0; i < chunks; i++) hash.update(chunk(i))
    const sent = hash.digest('hex')
    const before = rssKiB(m.proc.pid!)
    let duringPause = 0
    // The backend reads nothing for 1.5 s while the client writes as fast as it can.
    const got = new Promise<{ hash: string; bytes: number }>((resolve) => {
      bulk.once('connection', (s) => {
        s.pause()
        const h = createHash('sha256')
        let bytes = 0
        setTimeout(() => {
          duringPause = rssKiB(m.proc.pid!)
          s.on('data', (c) => {
            h.update(c)
            bytes += c.length
          })
          s.on('end', () => {
            resolve({ hash: h.digest('hex'), bytes })
            s.end()
          })
          s.resume()
        }, 1500)
      })
    })
    const c = connect({ host: bulkVip, port: 80 })
    await new Promise<void>((r) => c.once('connect', () => r()))
    // Write in 1 MiB pieces, honouring write()'s backpressure signal.
    for (let i = 0; i < chunks; i++) {
      if (!c.write(chunk(i))) await new Promise((r) => c.once('drain', r))
    }
    c.end()
    const result = await got
    c.destroy()
    t.equal(result.bytes, chunks << 20, 'every byte arrived')
    t.equal(result.hash, sent, 'sha256 matches')
    const grew = Math.round((duringPause - before) / 1024)
    t.ok(grew < 64, `meshlet RSS grew by ${grew} MiB (< 64 MiB) while the backend did not read ${chunks} MiB`)
  })

  await t.test('an established connection survives a reload and the removal of its endpoint', async (t) => {
    const { socket, id } = await connectAndIdentify(keepVip, 80)
    t.equal(id, keepA.id)
    socket.resume()
    const echo = (text: string) =>
      new Promise<string>((resolve) => {
        let buf = ''
        const on = (c: Buffer) => {
          buf += c
          if (buf.includes(text)) {
            socket.off('data', on)
            resolve(buf)
          }
        }
        socket.on('data', on)
        socket.write(text)
      })
    // Reload: another Service appears, the files are re-read.
    m.writeManifest(
      'services.yaml',
      services(`---
apiVersion: v1
kind: Service
metadata: { name: another }
spec: { ports: [{ port: 80 }] }
`),
    )
    await m.waitForStatus((s) => svcStatus(s, 'default/another') !== undefined)
    t.match(await echo('after-reload'), 'after-reload', 'still echoing after the reload')
    // The endpoint is replaced: new connections go to B, the old one stays with A.
    m.writeManifest('keep.yaml', endpointsYaml('keep', [{ port: keepA.port }], [net.ip(212)]))
    await m.waitForStatus(
      (s) =>
        lbPorts(s, 'default/keep')[0]?.usable.cluster === 1 &&
        svcStatus(s, 'default/keep')?.ports[0]?.endpoints[0]?.ip === net.ip(212),
    )
    t.equal(await identify(keepVip, 80), keepB.id, 'new connections go to the new endpoint')
    t.match(await echo('after-removal'), 'after-removal', 'the old connection still reaches the removed endpoint')
    const st = await m.status()
    t.ok((lbPorts(st, 'default/keep')[0]?.listeners[0]?.connections ?? 0) >= 1, '/status counts the open connection')
    socket.destroy()
  })

  await t.test('connect retry: an endpoint that refuses is skipped', async (t) => {
    for (let i = 0; i < 4; i++)
      t.equal(await identify(retryVip, 80), live.id, `connection ${i + 1} served by the live endpoint`)
    const metrics = await m.metrics()
    const failures = /meshlet_lb_connect_failures_total\{service="default\/retry"\} (\d+)/.exec(metrics)
    t.ok(failures && Number(failures[1]) >= 1, `failed dials counted (${failures?.[1]})`)
  })

  await t.test('every endpoint refuses: the client is reset after the retries', async (t) => {
    m.writeManifest('retry.yaml', endpointsYaml('retry', [{ port: live.port }], [net.ip(221), net.ip(223)]))
    await m.waitForStatus(
      (s) => svcStatus(s, 'default/retry')?.ports[0]?.endpoints.every((e) => e.ip !== net.ip(222)) === true,
    )
    await sleep(100)
    const err = await new Promise<string>((resolve) => {
      const s = connect({ host: retryVip, port: 80 })
      s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'))
      s.on('close', () => resolve('CLOSED'))
      s.on('data', () => resolve('DATA'))
    })
    t.equal(err, 'ECONNRESET', 'client reset')
  })
})
