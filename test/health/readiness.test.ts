// Readiness through the whole path: probe → verdict in the Store → endpoint `ready` in the next Snapshot. Backends
// fail and recover on command; the timing bounds are the spec's (§6.3): a failure that starts at T is acted on
// between (F−1)·P and F·P after T, a recovery within S·P, plus a tolerance for a loaded 2-core machine.

import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { container, httpBackend, httpGet, pod, probe, service, startPlane, waitFor } from './helpers.ts'

const TOLERANCE_MS = 900

t.test('endpoint leaves and re-enters the Snapshot within period × threshold', async (t) => {
  const b = await httpBackend(t)
  const h = await startPlane(t, [
    service('web', b.port),
    pod('web-1', '127.0.0.1', [
      container('app', { readiness: probe(httpGet(b.port, '/healthz'), { failureThreshold: 2, successThreshold: 2 }) }),
    ]),
  ])
  t.equal(h.endpointReady('web', '127.0.0.1'), false, 'not ready before the first probe passes')
  // successThreshold 2: the first success at ~0 s is not enough, the second at ~1 s is.
  const firstReady = await waitFor(() => h.endpointReady('web', '127.0.0.1') === true, 1000 + 2 * TOLERANCE_MS, 'ready')
  t.ok(firstReady >= 800, `ready only after two successes (${firstReady} ms)`)

  b.mode = 'fail'
  const out = await waitFor(() => h.endpointReady('web', '127.0.0.1') === false, 2000 + TOLERANCE_MS, 'endpoint out')
  t.ok(out >= 900, `out after two failures, not one (${out} ms)`)
  const st = h.probeStatus('web-1', 'readiness')!
  t.equal(st.state, 'failure')
  t.equal(st.lastMessage, 'HTTP probe failed with statuscode: 500')
  t.equal(st.lastTransition?.reason, 'HTTP probe failed with statuscode: 500')
  t.ok(st.consecutiveFailures >= 2)
  t.equal(h.health('web-1')?.ready, false)

  b.mode = 'ok'
  const back = await waitFor(() => h.endpointReady('web', '127.0.0.1') === true, 2000 + TOLERANCE_MS, 'endpoint back')
  t.ok(back >= 900, `back after two successes (${back} ms)`)
  t.equal(h.probeStatus('web-1', 'readiness')?.lastTransition?.to, 'success')

  const text = await h.metrics.metrics()
  t.match(text, /meshlet_health_probe_results_total\{kind="readiness",type="httpGet",result="failure"\} [1-9]/)
  t.match(text, /meshlet_health_probe_duration_seconds_count\{kind="readiness",type="httpGet"\} [1-9]/)
})

t.test('failureThreshold 1 acts on the first failure; timeouts count as failures', async (t) => {
  const fast = await httpBackend(t)
  const slow = await httpBackend(t)
  const h = await startPlane(t, [
    service('web', 8080),
    pod('fast', '127.0.0.2', [
      container('app', { readiness: probe(httpGet(fast.port, '/', { host: '127.0.0.1' }), { failureThreshold: 1 }) }),
    ]),
    pod('slow', '127.0.0.3', [
      container('app', {
        readiness: probe(httpGet(slow.port, '/', { host: '127.0.0.1' }), { failureThreshold: 2, timeoutSeconds: 1 }),
      }),
    ]),
  ])
  await waitFor(() => h.podReady('fast') === true && h.podReady('slow') === true, 3000, 'both ready')
  fast.mode = 'fail'
  slow.mode = 'hang'
  const fastOut = await waitFor(() => h.podReady('fast') === false, 1000 + TOLERANCE_MS, 'fast out')
  t.ok(fastOut <= 1000 + TOLERANCE_MS, `threshold 1: out within one period (${fastOut} ms)`)
  // Two hung probes: first at the next tick (≤ 1 s) + 1 s timeout, second right after (missed tick) + 1 s timeout.
  await waitFor(() => h.podReady('slow') === false, 3000 + 2 * TOLERANCE_MS, 'slow out after timeouts')
  const st = h.probeStatus('slow', 'readiness')!
  t.match(st.lastMessage, /context deadline exceeded/)
})

t.test('initialDelaySeconds skips ticks; the first probe runs at the first tick past the delay', async (t) => {
  const b = await httpBackend(t)
  // The container "starts" when the plane first sees the Pod, after this reading of the clock; a timer never fires
  // early, so the first probe's time checks the delay without an upper bound a loaded machine could miss.
  const t0 = Date.now()
  const h = await startPlane(t, [
    service('web', b.port),
    pod('late', '127.0.0.1', [container('app', { readiness: probe(httpGet(b.port), { initialDelaySeconds: 2 }) })]),
  ])
  t.equal(h.podReady('late'), false)
  await waitFor(() => h.podReady('late') === true, 2000 + 2 * TOLERANCE_MS, 'ready after the delay')
  t.ok(b.times[0]! - t0 >= 2000, `no probe during the 2 s delay (first at ${b.times[0]! - t0} ms)`)
  t.equal(b.requests.length, 1, 'one probe: the first tick past the delay')
})

t.test('Pods without probes are ready; Pods that disappear lose their verdict and their probes stop', async (t) => {
  const b = await httpBackend(t)
  const withProbe = pod('p', '127.0.0.1', [container('app', { readiness: probe(httpGet(b.port)) })])
  const plain = pod('plain', '127.0.0.4', [container('app')])
  const h = await startPlane(t, [service('web', b.port), withProbe, plain])
  t.equal(h.podReady('plain'), true, 'no probe: ready at once')
  t.equal(h.health('plain'), null, 'and no verdict')
  await waitFor(() => h.podReady('p') === true, 2000, 'probed pod ready')
  h.store.setObjects([service('web', b.port), plain], [])
  await waitFor(() => h.store.current!.pods.length === 1, 1000, 'pod gone')
  await sleep(50)
  const count = b.requests.length
  await sleep(1500)
  t.equal(b.requests.length, count, 'no more probes for a removed Pod')
  t.same(h.plane.status().pods, [])
})

t.test('manifests through config/load.ts: a named probe port resolves against its container', async (t) => {
  const { loadManifestText } = await import('../../config/load.ts')
  const b = await httpBackend(t)
  const loaded = loadManifestText(
    `
apiVersion: v1
kind: Service
metadata: { name: web }
spec:
  clusterIP: None
  selector: { app: web }
  ports: [{ port: 80, targetPort: http }]
---
apiVersion: v1
kind: Pod
metadata: { name: web-1, labels: { app: web } }
spec:
  containers:
    - name: app
      ports: [{ name: http, containerPort: ${b.port} }]
      readinessProbe:
        httpGet: { path: /named, port: http }
        periodSeconds: 1
status: { podIP: 127.0.0.1 }
`,
    'named-port.yaml',
  )
  t.same(loaded.errors, [])
  const h = await startPlane(t, loaded.objects as never)
  await waitFor(() => h.endpointReady('web', '127.0.0.1') === true, 2000, 'ready')
  t.equal(b.requests[0]!.url, '/named')
})
