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

/** The ejection deadline (epoch ms) /status shows for `ip`; NaN when it is not ejected. */
function ejectedUntil(ejected: readonly { ip: string; until: string }[], ip: string): number {
  const e = ejected.find((x) => x.ip === ip)
  return e ? Date.parse(e.until) : NaN
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
  // Reports are handled synchronously, so the ejection time lies between these two readings of the clock.
  const before = Date.now()
  fail(ips[0]!, 1)
  fail(ips[1]!, 3)
  fail(ips[2]!, 3)
  const after = Date.now()
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
  // The timer arithmetic is checked on the deadline the plane computed, not on how late a loaded machine runs it.
  const until = ejectedUntil(st.ejected, ips[0]!)
  t.ok(until >= before + 1000 && until <= after + 1000, `ejected for base × 1 = 1 s (until ${until - before} ms)`)
  await waitFor(() => h.endpointReady('web', ips[0]!) === true, 5000, 'back after the base time')
  t.ok(Date.now() >= until, 'not back before the time is up')
  // Ejected again right away: the second ejection in a row lasts 2 × base.
  const before2 = Date.now()
  fail(ips[0]!, 3)
  const after2 = Date.now()
  await waitFor(() => h.endpointReady('web', ips[0]!) === false, 1000, 'ejected again')
  t.match(h.store.current!.ejected['default/web|127.0.1.1|8080'], /ejected for 2s \(ejection 2 in a row\)/)
  const until2 = ejectedUntil(h.plane.status().outlier.ejected, ips[0]!)
  t.ok(until2 >= before2 + 2000 && until2 <= after2 + 2000, `second ejection 2 × base (until ${until2 - before2} ms)`)
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
