// Startup gating, liveness and startup failures as virtual restarts, reload semantics and terminating Pods
// (specs/l4-health.md §6.3-6.4).

import t from 'tap'
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { container, httpBackend, httpGet, pod, probe, service, startPlane, waitFor, type Backend } from './helpers.ts'

const TOLERANCE_MS = 900

/** Answers 200 on paths listed in `ok`, 500 elsewhere, and records when each path was asked. */
function routes(b: Backend, ok: Set<string>): Map<string, number[]> {
  const seen = new Map<string, number[]>()
  b.handler = (req, res) => {
    const path = req.url!
    if (!seen.has(path)) seen.set(path, [])
    seen.get(path)!.push(Date.now())
    res.writeHead(ok.has(path) ? 200 : 500).end()
    return true
  }
  return seen
}

t.test('startup gates readiness and liveness; its success triggers readiness at once', async (t) => {
  const b = await httpBackend(t)
  const ok = new Set(['/ready', '/live'])
  const seen = routes(b, ok)
  const h = await startPlane(t, [
    service('web', b.port),
    pod('web-1', '127.0.0.1', [
      container('app', {
        startup: probe(httpGet(b.port, '/started'), { failureThreshold: 30 }),
        readiness: probe(httpGet(b.port, '/ready'), { periodSeconds: 5 }),
        liveness: probe(httpGet(b.port, '/live')),
      }),
    ]),
  ])
  await waitFor(() => (seen.get('/started')?.length ?? 0) >= 2, 3000, 'startup probed twice')
  t.equal(seen.get('/ready'), undefined, 'no readiness probe before startup succeeds')
  t.equal(seen.get('/live'), undefined, 'no liveness probe before startup succeeds')
  t.same(h.health('web-1'), {
    ready: false,
    started: false,
    restartCount: 0,
    reason: 'container app: startup probe has not succeeded',
  })
  ok.add('/started')
  await waitFor(() => h.podReady('web-1') === true, 1000 + TOLERANCE_MS, 'ready after startup passed')
  const startedAt = seen.get('/started')!.at(-1)!
  const readyAt = seen.get('/ready')![0]!
  // Readiness has a 5 s period: only the immediate trigger explains a probe right after startup.
  t.ok(readyAt - startedAt < 500, `readiness probed ${readyAt - startedAt} ms after startup passed`)
  t.equal(h.health('web-1')?.started, true)
  const n = seen.get('/started')!.length
  // Two more liveness probes (1 s period, like startup's) are at least one startup period: the window is measured in
  // probes, so a slow machine lengthens it instead of failing it.
  const lives = seen.get('/live')?.length ?? 0
  await waitFor(() => (seen.get('/live')?.length ?? 0) >= lives + 2, 2000 + 2 * TOLERANCE_MS, 'liveness runs on')
  t.equal(seen.get('/started')!.length, n, 'startup stops probing once it passed')
  t.ok((seen.get('/live')?.length ?? 0) >= 1, 'liveness runs after startup')
})

t.test('liveness failure: virtual restart, endpoint out at once, hook runs, probes start over', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'meshlet-health-hook-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const hookFile = join(dir, 'hook.txt')
  const b = await httpBackend(t)
  const ok = new Set(['/ready', '/live', '/solo-live'])
  routes(b, ok)
  const h = await startPlane(
    t,
    [
      service('web', b.port),
      pod('web-1', '127.0.0.1', [
        container('app', {
          readiness: probe(httpGet(b.port, '/ready'), { initialDelaySeconds: 1 }),
          liveness: probe(httpGet(b.port, '/live'), { failureThreshold: 2 }),
        }),
      ]),
      // Liveness only: no readiness probe, so readiness follows "started" and a restart must still take it out.
      pod('solo', '127.0.0.5', [
        container('app', {
          liveness: probe(httpGet(b.port, '/solo-live', { host: '127.0.0.1' }), { failureThreshold: 1 }),
        }),
      ]),
    ],
    { onLivenessFailure: `sh -c 'echo "$0 $1 $2 $3" >> ${hookFile}' {pod} {namespace} {ip} {container}` },
  )
  await waitFor(() => h.endpointReady('web', '127.0.0.1') === true, 3000, 'ready')
  t.equal(h.podReady('solo'), true, 'liveness-only Pod is ready at once')
  ok.delete('/live')
  await waitFor(() => h.health('web-1')?.restartCount === 1, 2000 + TOLERANCE_MS, 'restarted once')
  t.equal(h.endpointReady('web', '127.0.0.1'), false, 'endpoint out at the restart even though readiness passed')
  ok.add('/live')
  await waitFor(() => existsSync(hookFile) && readFileSync(hookFile, 'utf8').includes('web-1'), 3000, 'hook ran')
  t.match(readFileSync(hookFile, 'utf8'), /^web-1 default 127\.0\.0\.1 app$/m, 'placeholders filled')
  const st = h.probeStatus('web-1', 'readiness')!
  t.equal(st.state, 'failure', 'readiness back to its initial Failure')
  const status = h.plane.status().pods.find((p) => p.pod === 'default/web-1')
  t.equal(status?.restartCount, 1)
  t.match(status?.lastRestart?.reason, /liveness probe failed: HTTP probe failed with statuscode: 500/)
  // initialDelaySeconds 1 counts again from the restart, then readiness passes.
  const back = await waitFor(
    () => h.endpointReady('web', '127.0.0.1') === true,
    2000 + TOLERANCE_MS,
    'back after restart',
  )
  t.ok(back >= 0)
  t.equal(h.health('web-1')?.restartCount, 1, 'no further restart once liveness passes')

  // The liveness-only Pod: out at the restart, back at its next passing liveness probe.
  ok.delete('/solo-live')
  await waitFor(
    () => (h.health('solo')?.restartCount ?? 0) >= 1 && h.podReady('solo') === false,
    1000 + TOLERANCE_MS,
    'solo restarted and out',
  )
  ok.add('/solo-live')
  await waitFor(() => h.podReady('solo') === true, 1000 + TOLERANCE_MS, 'solo back on a passing liveness probe')
  const text = await h.metrics.metrics()
  t.match(text, /meshlet_health_virtual_restarts_total\{reason="liveness"\} [2-9]/)
})

t.test('startup failure after failureThreshold is a virtual restart too', async (t) => {
  const b = await httpBackend(t)
  routes(b, new Set())
  const h = await startPlane(t, [
    service('web', b.port),
    pod('web-1', '127.0.0.1', [
      container('app', { startup: probe(httpGet(b.port, '/started'), { failureThreshold: 2 }) }),
    ]),
  ])
  await waitFor(() => h.health('web-1')?.restartCount === 1, 2000 + TOLERANCE_MS, 'restart after two startup failures')
  t.equal(h.podReady('web-1'), false)
  t.equal(h.health('web-1')?.started, false)
  t.equal(h.probeStatus('web-1', 'startup')?.state, 'unknown', 'startup back to Unknown')
})

t.test('a reload that changes one probe restarts only that worker; a terminating Pod stops liveness', async (t) => {
  const b = await httpBackend(t)
  const seen = routes(b, new Set(['/ready', '/live', '/live2']))
  const svc = service('web', b.port)
  const v1 = pod('web-1', '127.0.0.1', [
    container('app', { readiness: probe(httpGet(b.port, '/ready')), liveness: probe(httpGet(b.port, '/live')) }),
  ])
  const h = await startPlane(t, [svc, v1])
  await waitFor(
    () => h.podReady('web-1') === true && (h.probeStatus('web-1', 'readiness')?.consecutiveSuccesses ?? 0) >= 2,
    3000,
    'ready twice',
  )
  const readinessBefore = h.probeStatus('web-1', 'readiness')?.consecutiveSuccesses ?? 0
  let flapped = false
  const unsub = h.store.subscribe((s) => {
    if (s.pods.find((p) => p.key === 'default/web-1')?.ready === false) flapped = true
  })
  t.teardown(unsub)
  const v2 = pod('web-1', '127.0.0.1', [
    container('app', { readiness: probe(httpGet(b.port, '/ready')), liveness: probe(httpGet(b.port, '/live2')) }),
  ])
  h.store.setObjects([svc, v2], [])
  await waitFor(() => (seen.get('/live2')?.length ?? 0) >= 1, 2000, 'new liveness probe runs')
  await waitFor(
    () => (h.probeStatus('web-1', 'readiness')?.consecutiveSuccesses ?? 0) > readinessBefore,
    1000 + TOLERANCE_MS,
    'readiness probed again after the reload',
  )
  t.notOk(flapped, 'the Pod never went unready on the reload')
  t.ok(
    (h.probeStatus('web-1', 'readiness')?.consecutiveSuccesses ?? 0) > readinessBefore,
    'readiness kept its counters',
  )
  t.equal(h.probeStatus('web-1', 'liveness')?.lastTransition, null, 'the liveness worker is new')

  const v3 = pod('web-1', '127.0.0.1', v2.spec.containers as never, { deletionTimestamp: '2026-01-01T00:00:00Z' })
  h.store.setObjects([svc, v3], [])
  await waitFor(() => h.probeStatus('web-1', 'liveness') === undefined, 1000, 'liveness worker gone')
  const live = seen.get('/live2')!.length
  const ready = seen.get('/ready')!.length
  // Readiness keeps running: two of its probes are at least one liveness period (both 1 s).
  await waitFor(() => seen.get('/ready')!.length >= ready + 2, 2000 + 2 * TOLERANCE_MS, 'readiness keeps running')
  t.equal(seen.get('/live2')!.length, live, 'no liveness probe on a terminating Pod')
  const ep = h.store.current!.services[0]!.ports[0]!.endpoints[0]!
  t.equal(ep.terminating, true)
  t.equal(ep.serving, true, 'terminating and still serving')
})
