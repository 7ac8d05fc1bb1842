// Passive ejection (specs/l4-health.md §7.2, §7.4): opt-in by annotation, N consecutive failures eject, at most the
// max share of a Service port's endpoints (at least one), never the last usable one, base × n, back when the time is
// up or a readiness probe passes.

import pino from 'pino'
import { Registry } from 'prom-client'
import t from 'tap'
import { registerHealthMetrics } from '../../health/metrics.ts'
import { OutlierDetector } from '../../health/outlier.ts'
import type { Service } from '../../model/objects.ts'
import { Store } from '../../model/store.ts'
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

t.test('tables follow Snapshot changes incrementally, as a full rebuild would build them', async (t) => {
  // Issue 14: the plane hands the detector only the Services a Snapshot changed; a second detector rebuilt from every
  // Snapshot whole must show the same tables after each step, and ejections of Services that lose outlier detection
  // or disappear are lifted.
  const store = new Store({ nodeName: 'test-node', serviceCidrs: [] })
  const log = pino({ level: 'silent' })
  const inc = new OutlierDetector(store, log, registerHealthMetrics(new Registry()))
  const full = new OutlierDetector(store, log, registerHealthMetrics(new Registry()))
  t.teardown(() => {
    inc.close()
    full.close()
  })
  let last = 0
  let incremental = 0
  store.subscribe((s) => {
    if (s.changes && s.version === last + 1) {
      incremental++
      inc.update(s, s.changes.services)
    } else inc.update(s)
    last = s.version
    full.update(s)
  })
  const on = { 'meshlet.io/outlier-consecutive-failures': '1', 'meshlet.io/outlier-max-ejection-percent': '50' }
  const sel = (n: number) => ({ app: `s${n}` })
  const pods = [0, 1, 2, 3].flatMap((n) => [
    pod(`s${n}-a`, `127.0.4.${2 * n + 1}`, [container('app')], { labels: sel(n) }),
    pod(`s${n}-b`, `127.0.4.${2 * n + 2}`, [container('app')], { labels: sel(n) }),
  ])
  const steps: { what: string; services: Service[] }[] = [
    {
      what: 'start',
      services: [service('s0', 8080, on, sel(0)), service('s1', 8080, {}, sel(1)), service('s2', 8080, {}, sel(2))],
    },
    {
      what: 's0 loses its annotations, s1 gains them, s3 arrives with a bad one',
      services: [
        service('s0', 8080, {}, sel(0)),
        service('s1', 8080, on, sel(1)),
        service('s2', 8080, {}, sel(2)),
        service('s3', 8080, { 'meshlet.io/outlier-max-ejection-percent': 'half' }, sel(3)),
      ],
    },
    { what: 's1 and s3 disappear', services: [service('s0', 8080, {}, sel(0)), service('s2', 8080, on, sel(2))] },
  ]
  const ejectFirst = (svc: string, ip: string) => {
    inc.report(`default/${svc}`, ip, 8080, false)
    store.flush()
  }
  for (const [i, step] of steps.entries()) {
    store.setObjects([...step.services, ...pods], [])
    store.flush()
    const a = inc.status()
    const b = full.status()
    t.same(a.services, b.services, `${step.what}: the same Services`)
    t.same(a.errors, b.errors, `${step.what}: the same annotation errors`)
    if (i === 0) {
      ejectFirst('s0', '127.0.4.1')
      t.same(Object.keys(store.current!.ejected), ['default/s0|127.0.4.1|8080'], 's0 ejects with its annotations')
    }
    if (i === 1) {
      // The lift is written back to the Store: one more Snapshot.
      store.flush()
      t.same(store.current!.ejected, {}, "s0's ejection is lifted with its annotations")
      t.equal(a.errors[0]?.service, 'default/s3')
      ejectFirst('s1', '127.0.4.3')
      t.same(Object.keys(store.current!.ejected), ['default/s1|127.0.4.3|8080'], 's1 ejects once annotated')
    }
    if (i === 2) t.same(store.flush()!.ejected, {}, "s1's ejection is lifted when it disappears")
  }
  t.same(inc.status().services, full.status().services)
  t.ok(incremental >= steps.length, `Snapshots applied from their changes (${incremental})`)
})
