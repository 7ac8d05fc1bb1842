// Failure behaviour (specs/ingress.md §1.8.3, 1.8.5, 1.8.6, 1.8.8): backends not listening, killed mid-load, slow,
// missing; endpoints going unready under load; draining on close.

import t from 'tap'
import { request } from 'undici'
import type { KubeObject } from '../../model/objects.ts'
import { echoBackend, eventually, get, ingress, pod, service, startRouter, engineTest } from './helpers.ts'

const base = 80 + (process.pid % 50)
const HEALTHY = { ready: true, started: true, restartCount: 0, reason: null }
const UNHEALTHY = { ready: false, started: true, restartCount: 0, reason: 'probe failed' }

/** Runs `n` GETs with `concurrency` workers; returns the status counts. */
async function load(
  url: string,
  host: string,
  n: number,
  concurrency: number,
  during?: (done: number) => void,
): Promise<Map<number | string, number>> {
  const counts = new Map<number | string, number>()
  let started = 0
  let done = 0
  const worker = async () => {
    while (started < n) {
      started++
      let key: number | string
      try {
        const res = await request(url, { headers: { host } })
        await res.body.text()
        key = res.statusCode
      } catch (err) {
        key = (err as { code?: string }).code ?? 'error'
      }
      counts.set(key, (counts.get(key) ?? 0) + 1)
      done++
      during?.(done)
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  return counts
}

engineTest(t, 'backend not listening: 502; with a second endpoint the request is retried there', async (t) => {
  const dead = await echoBackend(t, 'dead', `127.4.${base}.1`)
  await dead.close()
  const reports: string[] = []
  const reporter = {
    report: (svc: string, ip: string, port: number, ok: boolean) => void reports.push(`${svc} ${ip}:${port} ${ok}`),
  }
  const r = await startRouter(
    t,
    [service('web'), pod('web-dead', 'web', dead.host, dead.port), ingress('i', [{ paths: [['/', 'Prefix', 'web']] }])],
    { reporter },
  )
  const res = await get(r, 'h', '/')
  t.equal(res.status, 502)
  t.ok(reports.includes(`default/web ${dead.host}:${dead.port} false`), 'the failure is reported for passive ejection')

  const live = await echoBackend(t, 'live', `127.4.${base}.2`)
  r.set([
    service('web'),
    pod('web-dead', 'web', dead.host, dead.port),
    pod('web-live', 'web', live.host, live.port),
    ingress('i', [{ paths: [['/', 'Prefix', 'web']] }]),
  ])
  for (let i = 0; i < 10; i++) {
    const ok = await get(r, 'h', '/', { method: i % 2 ? 'GET' : 'POST', body: i % 2 ? undefined : 'payload' })
    t.equal(ok.status, 200, 'connect failure retried on the other endpoint (also for POST: nothing was sent)')
    t.equal(ok.echo!.server, 'live')
  }
  const metrics = await r.metrics.metrics()
  t.match(
    metrics,
    /meshlet_proxy_upstream_connect_errors_total\{ingress="default\/i",path="\/",service="default\/web:8080"\} [1-9]/,
  )
})

engineTest(t, 'no endpoints, missing Service, missing port → 503', async (t) => {
  const r = await startRouter(t, [
    service('empty'),
    ingress('i', [
      {
        host: 'h',
        paths: [
          ['/empty', 'Prefix', 'empty'],
          ['/missing', 'Prefix', 'nope'],
          ['/port', 'Prefix', 'empty', 9999],
        ],
      },
    ]),
  ])
  for (const p of ['/empty', '/missing', '/port']) {
    const res = await get(r, 'h', p)
    t.equal(res.status, 503, p)
    t.match(res.headers['x-request-id'], /^[0-9a-f]{32}$/)
  }
  const routes = r.status().routes
  t.match(routes.find((x) => x.path === '/missing')?.error, /not found/)
  for (const p of ['/empty', '/missing', '/port'])
    t.equal(routes.find((x) => x.path === p)?.code, 'MLT_PROXY_NO_ENDPOINTS', `${p}: code in /status`)
  t.same(r.status().unrouted, {}, 'nothing answered without a route yet')
  t.equal((await get(r, 'other', '/')).status, 404, 'a host with no route and no default backend')
  t.equal((await get(r, 'h', '/', { method: 'TRACE' })).status, 405)
  t.same(r.status().unrouted, { MLT_PROXY_NO_ROUTE: 1, MLT_PROXY_METHOD_NOT_ALLOWED: 1 }, 'unrouted answers by code')
})

engineTest(t, 'slow backend: proxy-read-timeout → 504', async (t) => {
  const slow = await echoBackend(t, 'slow', `127.4.${base}.3`)
  slow.handler = (_req, res) => setTimeout(() => res.end('late'), 3000).unref()
  const r = await startRouter(t, [
    service('slow'),
    pod('slow-1', 'slow', slow.host, slow.port),
    ingress('i', [{ paths: [['/', 'Prefix', 'slow']] }], {
      annotations: { 'nginx.ingress.kubernetes.io/proxy-read-timeout': '1' },
    }),
  ])
  const t0 = Date.now()
  const res = await get(r, 'h', '/')
  t.equal(res.status, 504)
  t.ok(Date.now() - t0 >= 900 && Date.now() - t0 < 2900, 'after about one second')
  t.equal(slow.count, 1, 'a read timeout is not retried (the request was sent)')
})

engineTest(t, 'backend killed mid-load: no failed idempotent request while another endpoint is ready', async (t) => {
  const a = await echoBackend(t, 'a', `127.4.${base}.4`)
  const b = await echoBackend(t, 'b', `127.4.${base}.5`)
  const r = await startRouter(t, [
    service('web'),
    pod('a', 'web', a.host, a.port),
    pod('b', 'web', b.host, b.port),
    ingress('i', [{ paths: [['/', 'Prefix', 'web']] }]),
  ])
  let killed = false
  const counts = await load(r.url + '/', 'h', 600, 8, (done) => {
    if (done === 150 && !killed) {
      killed = true
      void a.close()
    }
  })
  t.same(Object.fromEntries(counts), { 200: 600 }, 'every request answered 200')
  t.ok(b.count > 300, 'the survivor took the rest')
})

engineTest(t, 'endpoint going unready under load: no failed request, no new requests to it', async (t) => {
  const a = await echoBackend(t, 'a', `127.4.${base}.6`)
  const b = await echoBackend(t, 'b', `127.4.${base}.7`)
  // Slow enough that requests are in flight on both when the table swaps.
  a.handler = (_req, _res, echo) => setTimeout(echo, 5)
  b.handler = (_req, _res, echo) => setTimeout(echo, 5)
  const objects: KubeObject[] = [
    service('web'),
    pod('a', 'web', a.host, a.port, { probe: true }),
    pod('b', 'web', b.host, b.port, { probe: true }),
    ingress('i', [{ paths: [['/', 'Prefix', 'web']] }]),
  ]
  const r = await startRouter(t, objects)
  t.equal((await get(r, 'h', '/')).status, 503, 'Pods with readiness probes start not ready')
  r.store.setPodHealth('default/a', HEALTHY)
  r.store.setPodHealth('default/b', HEALTHY)
  r.store.flush()
  let countAtSwap = -1
  const counts = await load(r.url + '/', 'h', 400, 8, (done) => {
    if (done === 100) {
      r.store.setPodHealth('default/a', UNHEALTHY)
      r.store.flush()
      setTimeout(() => (countAtSwap = a.count), 50)
    }
  })
  t.same(Object.fromEntries(counts), { 200: 400 })
  t.ok(countAtSwap > 0)
  t.equal(a.count, countAtSwap, 'no request reached the unready endpoint after the swap (in-flight ones finished)')
})

engineTest(t, 'no ready endpoint but serving+terminating ones: those are used (kube-proxy fallback)', async (t) => {
  const a = await echoBackend(t, 'term', `127.4.${base}.8`)
  const r = await startRouter(t, [
    service('web'),
    pod('a', 'web', a.host, a.port, { terminating: true }),
    ingress('i', [{ paths: [['/', 'Prefix', 'web']] }]),
  ])
  const res = await get(r, 'h', '/')
  t.equal(res.status, 200)
  t.equal(res.echo!.server, 'term')
})

engineTest(t, 'close(deadline): stops accepting, finishes in-flight requests', async (t) => {
  const slow = await echoBackend(t, 'slow', `127.4.${base}.9`)
  slow.handler = (_req, _res, echo) => setTimeout(echo, 400)
  const r = await startRouter(t, [
    service('web'),
    pod('a', 'web', slow.host, slow.port),
    ingress('i', [{ paths: [['/', 'Prefix', 'web']] }]),
  ])
  const inflight = get(r, 'h', '/')
  await eventually(() => slow.count === 1)
  const closing = r.plane.close(Date.now() + 3000)
  const res = await inflight
  t.equal(res.status, 200, 'the in-flight request finished')
  await closing
  await t.rejects(request(r.url + '/', { headers: { host: 'h' } }), 'no longer accepting')
  t.equal(r.status().listeners.http?.state, 'closed')
})
