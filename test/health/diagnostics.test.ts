// diagnostics_channel `meshlet:health:probe-verdict` (model/diagnostics.ts): one message per verdict change after the
// threshold, none per probe result, and nothing is built when nobody subscribes.

import t from 'tap'
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { probeVerdict, type ProbeVerdictMessage } from '../../model/diagnostics.ts'
import { container, httpBackend, httpGet, pod, probe, service, startPlane, waitFor } from './helpers.ts'

t.test('a readiness verdict change is published once per transition, with pod, container and reason', async (t) => {
  const seen: ProbeVerdictMessage[] = []
  const onMessage = (m: unknown) => {
    const v = m as ProbeVerdictMessage
    if (v.pod === 'default/diag-1') seen.push(v)
  }
  subscribe(probeVerdict.name, onMessage)
  t.teardown(() => unsubscribe(probeVerdict.name, onMessage))

  const b = await httpBackend(t)
  const h = await startPlane(t, [
    service('web', b.port),
    pod('diag-1', '127.0.0.1', [
      container('app', { readiness: probe(httpGet(b.port, '/healthz'), { failureThreshold: 2 }) }),
    ]),
  ])
  await waitFor(() => seen.length === 1, 3000, 'first verdict published')
  t.same(seen[0], {
    pod: 'default/diag-1',
    container: 'app',
    kind: 'readiness',
    from: 'failure',
    to: 'success',
    reason: 'probe succeeded',
  })
  t.equal(h.podReady('diag-1'), true)

  b.mode = 'fail'
  await waitFor(() => seen.length === 2, 4000, 'failure verdict published')
  t.match(seen[1], { from: 'success', to: 'failure', reason: 'HTTP probe failed with statuscode: 500' })
  // Two more failing probes change nothing: no message per result.
  const probes = b.requests.length
  await waitFor(() => b.requests.length >= probes + 2, 4000, 'two more failing probes')
  t.equal(seen.length, 2, 'no message for a result that does not change the verdict')
})

t.test('nobody subscribed: the channel reports it, so publishers build nothing', async (t) => {
  t.equal(probeVerdict.hasSubscribers, false)
  t.equal(probeVerdict.name, 'meshlet:health:probe-verdict')
})
