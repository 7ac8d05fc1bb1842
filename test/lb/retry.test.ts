// L4 retries (issue 13 item 13): a retry skips the endpoints this connection already failed to reach. With one of two
// endpoints dead and no probes, a retry that took the shared round-robin cursor's next pick could land on the dead
// endpoint again, because concurrent connections move the cursor between a connection's attempts.

import t from 'tap'
import { connect, createServer } from 'node:net'
import { startMeshlet } from '../helpers/meshlet.ts'
import { clusterIP, endpointsYaml, identifyServer, netOf, waitListener } from './helpers.ts'

const net = netOf(7)

/** One connection: 'ok' when the backend's identity line arrives, else the way it failed. */
function oneConnection(host: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = connect({ host, port })
    const timer = setTimeout(() => finish('TIMEOUT'), 10_000)
    const finish = (r: string) => {
      clearTimeout(timer)
      s.destroy()
      resolve(r)
    }
    s.once('data', () => finish('ok'))
    s.once('error', (err: NodeJS.ErrnoException) => finish(err.code ?? 'error'))
    s.once('close', () => finish('CLOSED'))
  })
}

t.test('with 3 of 4 endpoints dead, every connection reaches the live one', { timeout: 60_000 }, async (t) => {
  // .221-.223 have nothing listening on the port that .224 serves: each dial there is refused at once. Four attempts
  // that each exclude what was tried must reach .224; picks from the shared cursor reach it only by luck.
  const live = await identifyServer(t, net.ip(224))
  const m = await startMeshlet(t, {
    manifests: {
      'svc.yaml': 'apiVersion: v1\nkind: Service\nmetadata: { name: flaky }\nspec: { ports: [{ port: 80 }] }\n',
      'ep.yaml': endpointsYaml('flaky', [{ port: live.port }], [net.ip(221), net.ip(222), net.ip(223), net.ip(224)]),
    },
    args: ['--service-cidr', net.serviceCidr, '--node-address', net.ip(240)],
  })
  const vip = await clusterIP(m, 'default/flaky')
  await waitListener(m, 'default/flaky', (l) => l.state === 'open')

  // 10 rounds of 30 concurrent connections (bounded: 300 connections, each with a 10 s deadline).
  const outcomes = new Map<string, number>()
  for (let round = 0; round < 10; round++) {
    const results = await Promise.all(Array.from({ length: 30 }, () => oneConnection(vip, 80)))
    for (const r of results) outcomes.set(r, (outcomes.get(r) ?? 0) + 1)
  }
  t.same(Object.fromEntries(outcomes), { ok: 300 }, 'all 300 connections served, none reset')
  // On a loaded machine a dial to the live endpoint can time out too (the assertion above says so): count from here.
  const before = (await waitListener(m, 'default/flaky', (l) => l.state === 'open'))?.refused?.count ?? 0

  // Only dead endpoints left: every dial fails, the client is reset, and /status says so with its code.
  m.writeManifest('ep.yaml', endpointsYaml('flaky', [{ port: live.port }], [net.ip(221), net.ip(222), net.ip(223)]))
  await m.waitForStatus((s) => s.planes.lb?.services['default/flaky']?.[0]?.usable.cluster === 3)
  t.not(await oneConnection(vip, 80), 'ok', 'no live endpoint: the connection is not served')
  const l = await waitListener(m, 'default/flaky', (l) => (l.refused?.count ?? 0) > before)
  t.equal(l?.refused?.code, 'MLT_LB_NO_UPSTREAM')
  t.equal(l?.refused?.count, before + 1, 'the reset counted once')
})

t.test('a listener that cannot bind: MLT_LB_BIND in /status and in its error line', { timeout: 60_000 }, async (t) => {
  const live = await identifyServer(t, net.ip(225))
  // Something else holds the ClusterIP's port before meshlet starts.
  const squatter = createServer()
  await new Promise<void>((resolve, reject) => {
    squatter.once('error', reject)
    squatter.listen({ host: net.ip(100), port: 80, exclusive: true }, () => resolve())
  })
  t.teardown(() => squatter.close())
  const m = await startMeshlet(t, {
    manifests: {
      'svc.yaml': `apiVersion: v1\nkind: Service\nmetadata: { name: taken }\nspec: { clusterIP: ${net.ip(100)}, ports: [{ port: 80 }] }\n`,
      'ep.yaml': endpointsYaml('taken', [{ port: live.port }], [net.ip(225)]),
    },
    args: ['--service-cidr', net.serviceCidr, '--node-address', net.ip(240)],
    // A listener in error keeps /readyz at 503 (issue 12): wait for the listener's state instead.
    waitReady: false,
  })
  const l = await waitListener(m, 'default/taken', (l) => l.state === 'error')
  t.equal(l?.code, 'MLT_LB_BIND', 'the code beside the error text')
  t.match(l?.error, /EADDRINUSE/)
  const line = await m.waitForLog((x) => x.code === 'MLT_LB_BIND')
  t.match(line, { level: 50, service: 'default/taken', address: net.ip(100), port: 80 })
})
