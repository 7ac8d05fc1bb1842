// Passive ejection (specs/l4-health.md §7.2, §7.4): opt-in by annotation, N consecutive failures eject, at most the
// max share of a Service port's endpoints (at least one), never the last usable one, base × n, back when the time is
// up or a readiness probe passes.

import t from 'tap'
import { container, httpBackend, httpGet, pod, probe, service, startPlane, waitFor } from './helpers.ts'

const ips = Array.from({ length: 10 }, (_, i) => `127.0.1.${i + 1}`)
const annotations = {
  'meshlet.io/outlier-consecutive-failures': '3',
  'meshlet.io/outlier-base-ejection-seconds': '1',
  'meshlet.io/outlier-max-ejection-percent': '20',
}

t.test('consecutive failures eject, capped by max-ejection-percent, back after base × n', async (t) => {
  const h = await startPlane(t, [
    service('web', 8080, annotations),
    ...ips.map((ip, i) => pod(`web-${i}`, ip, [container('app')])),
  ])
  const r = h.plane.reporter
  const fail = (ip: string, n: number) => {
    for (let i = 0; i < n; i++) r.report('default/web', ip, 8080, false)
  }
  fail(ips[0]!, 2)
  r.report('default/web', ips[0]!, 8080, true)
  fail(ips[0]!, 2)
  await waitFor(() => h.store.current!.version > 0, 100, 'snapshot')
  t.equal(h.endpointReady('web', ips[0]!), true, 'a success in between resets the count')
  fail(ips[0]!, 1)
  fail(ips[1]!, 3)
  fail(ips[2]!, 3)
  await waitFor(
    () => h.endpointReady('web', ips[0]!) === false && h.endpointReady('web', ips[1]!) === false,
    1000,
    'two ejected',
  )
  t.equal(h.endpointReady('web', ips[2]!), true, '20 % of 10: the third is not ejected')
  t.match(h.store.current!.ejected['default/web|127.0.1.1|8080'], /3 consecutive upstream failures: ejected for 1s/)
  const st = h.plane.status().outlier
  t.equal(st.ejected.length, 2)
  t.same(st.services[0], {
    service: 'default/web',
    consecutiveFailures: 3,
    baseEjectionSeconds: 1,
    maxEjectionSeconds: 300,
    maxEjectionPercent: 20,
  })
  const t0 = Date.now()
  await waitFor(() => h.endpointReady('web', ips[0]!) === true, 2500, 'back after the base time')
  t.ok(Date.now() - t0 <= 1600, 'within ~1 s')
  // Ejected again right away: the second ejection in a row lasts 2 × base.
  fail(ips[0]!, 3)
  await waitFor(() => h.endpointReady('web', ips[0]!) === false, 1000, 'ejected again')
  t.match(h.store.current!.ejected['default/web|127.0.1.1|8080'], /ejected for 2s \(ejection 2 in a row\)/)
  t.match(await h.metrics.metrics(), /meshlet_health_ejections_total\{service="default\/web"\} 3/)
})

t.test('never the last usable endpoint; no annotation means no ejection; bad values fall back', async (t) => {
  const h = await startPlane(t, [
    service(
      'one',
      8080,
      { 'meshlet.io/outlier-consecutive-failures': '1', 'meshlet.io/outlier-max-ejection-percent': '100' },
      { app: 'one' },
    ),
    pod('one-0', '127.0.2.1', [container('app')], { labels: { app: 'one' } }),
    service('plain', 8080, {}, { app: 'plain' }),
    pod('plain-0', '127.0.2.2', [container('app')], { labels: { app: 'plain' } }),
    pod('plain-1', '127.0.2.3', [container('app')], { labels: { app: 'plain' } }),
    service('bad', 8080, { 'meshlet.io/outlier-consecutive-failures': 'many' }, { app: 'bad' }),
  ])
  for (let i = 0; i < 10; i++) {
    h.plane.reporter.report('default/one', '127.0.2.1', 8080, false)
    h.plane.reporter.report('default/plain', '127.0.2.2', 8080, false)
  }
  await new Promise((r) => setTimeout(r, 100))
  t.equal(h.endpointReady('one', '127.0.2.1'), true, 'the only endpoint stays')
  t.equal(h.endpointReady('plain', '127.0.2.2'), true, 'no annotation: reports are ignored')
  t.same(h.store.current!.ejected, {})
  const st = h.plane.status().outlier
  t.equal(st.errors[0]?.code, 'MLT_HEALTH_OUTLIER_ANNOTATION')
  t.match(st.errors[0]?.message, /outlier-consecutive-failures: must be an integer 1\.\.1000000, got "many"; using 5/)
  t.equal(st.services.find((s) => s.service === 'default/bad')?.consecutiveFailures, 5)
})

t.test('a passing readiness probe brings an ejected endpoint back early', async (t) => {
  const b = await httpBackend(t)
  const h = await startPlane(t, [
    service('web', 8080, {
      ...annotations,
      'meshlet.io/outlier-base-ejection-seconds': '60',
      'meshlet.io/outlier-max-ejection-percent': '50',
    }),
    pod('web-0', '127.0.3.1', [
      container('app', { readiness: probe(httpGet(b.port, '/', { host: '127.0.0.1' }), { periodSeconds: 1 }) }),
    ]),
    pod('web-1', '127.0.3.2', [container('app')]),
  ])
  await waitFor(() => h.endpointReady('web', '127.0.3.1') === true, 2000, 'ready')
  b.mode = 'fail'
  for (let i = 0; i < 3; i++) h.plane.reporter.report('default/web', '127.0.3.1', 8080, false)
  await waitFor(() => h.endpointReady('web', '127.0.3.1') === false, 1000, 'ejected')
  b.mode = 'ok'
  await waitFor(
    () => h.endpointReady('web', '127.0.3.1') === true,
    2500,
    'back on the next passing probe, long before 60 s',
  )
  t.same(h.store.current!.ejected, {})
})
