// Through `meshlet up`: round robin (exact counts, continuation after a list change), sessionAffinity ClientIP
// (stickiness, expiry, endpoint going unready, one table per Service port) and the fast refusal of a Service port with
// no usable endpoint (specs/l4-health.md §3.2-§3.4). The sliding window's arithmetic is in affinity.test.ts.

import t from 'tap'
import { startMeshlet } from '../helpers/meshlet.ts'
import {
  clusterIP,
  connectError,
  endpointsYaml,
  identify,
  identifyServer,
  lbPorts,
  netOf,
  svcStatus,
  waitListener,
} from './helpers.ts'

const net = netOf(0)

t.test('round robin, affinity and refusal through meshlet up', { timeout: 80_000 }, async (t) => {
  // Backends: three for round robin (.201 .203 .205, and .204 added later), two for affinity (two ports each).
  const rrIps = [net.ip(201), net.ip(203), net.ip(205)]
  const rr: { id: string; port: number }[] = []
  for (const ip of rrIps) rr.push(await identifyServer(t, ip))
  const extra = await identifyServer(t, net.ip(204))
  const affA = await identifyServer(t, net.ip(211))
  const affB = await identifyServer(t, net.ip(212), affA.port)
  const affA2 = await identifyServer(t, net.ip(211))
  const affB2 = await identifyServer(t, net.ip(212), affA2.port)
  const empty = await identifyServer(t, net.ip(221))

  // Every backend here has its own port: an Endpoints object lists (ip, port) pairs of one subset, so each rr
  // endpoint gets its own subset.
  const rrEndpoints = (list: { id: string }[]) => `apiVersion: v1
kind: Endpoints
metadata: { name: rr }
subsets:
${list.map((b) => `  - addresses: [{ ip: ${b.id.split(':')[0]} }]\n    ports: [{ port: ${b.id.split(':')[1]} }]`).join('\n')}
`
  const services = `apiVersion: v1
kind: Service
metadata: { name: rr }
spec:
  ports: [{ port: 80 }]
---
apiVersion: v1
kind: Service
metadata: { name: aff }
spec:
  sessionAffinity: ClientIP
  sessionAffinityConfig: { clientIP: { timeoutSeconds: 2 } }
  ports: [{ name: a, port: 80 }, { name: b, port: 81 }]
---
apiVersion: v1
kind: Service
metadata: { name: empty }
spec:
  ports: [{ port: 80 }]
`
  const affEndpoints = (ready: string[], notReady: string[]) =>
    endpointsYaml(
      'aff',
      [
        { name: 'a', port: affA.port },
        { name: 'b', port: affA2.port },
      ],
      ready,
      notReady,
    )
  const m = await startMeshlet(t, {
    manifests: {
      'services.yaml': services,
      'rr-endpoints.yaml': rrEndpoints(rr),
      'aff-endpoints.yaml': affEndpoints([net.ip(211), net.ip(212)], []),
    },
    args: ['--service-cidr', net.serviceCidr, '--node-address', net.ip(240)],
  })

  const rrIp = await clusterIP(m, 'default/rr')
  const affIp = await clusterIP(m, 'default/aff')
  const emptyIp = await clusterIP(m, 'default/empty')
  await waitListener(m, 'default/rr', (l) => l.state === 'open')
  await waitListener(m, 'default/aff', (l) => l.state === 'open' && l.port === 81)

  await t.test('round robin: N·k connections over k endpoints give each exactly N', async (t) => {
    const counts = new Map<string, number>()
    const order: string[] = []
    for (let i = 0; i < 5 * 3; i++) {
      const id = await identify(rrIp, 80)
      order.push(id)
      counts.set(id, (counts.get(id) ?? 0) + 1)
    }
    t.same([...counts.values()], [5, 5, 5], `each of 3 endpoints got 5: ${JSON.stringify([...counts])}`)
    // Rotation in (ip, port) order, with no endpoint twice in a row.
    t.same(
      order.slice(0, 3),
      rr.map((b) => b.id),
      'order is the sorted endpoint list',
    )
  })

  await t.test('round robin continues after the list changes', async (t) => {
    // After 15 picks the cursor is on .205; pick .201 and .203 so the cursor sits on .203.
    t.equal(await identify(rrIp, 80), rr[0]!.id)
    t.equal(await identify(rrIp, 80), rr[1]!.id)
    // Add .204: the next pick is the successor of .203 in the new list, not the top of the list.
    m.writeManifest('rr-endpoints.yaml', rrEndpoints([rr[0]!, rr[1]!, extra, rr[2]!]))
    await m.waitForStatus(
      (s) =>
        svcStatus(s, 'default/rr')?.ports[0]?.endpoints.length === 4 &&
        lbPorts(s, 'default/rr')[0]?.usable.cluster === 4,
    )
    t.equal(await identify(rrIp, 80), extra.id, 'new endpoint .204 follows .203')
    // Remove .205 (next in line): the rotation goes on with the successor, .201.
    m.writeManifest('rr-endpoints.yaml', rrEndpoints([rr[0]!, rr[1]!, extra]))
    await m.waitForStatus((s) => lbPorts(s, 'default/rr')[0]?.usable.cluster === 3)
    t.equal(await identify(rrIp, 80), rr[0]!.id, 'removed endpoint skipped, rotation wraps to .201')
    t.equal(await identify(rrIp, 80), rr[1]!.id)
    t.equal(await identify(rrIp, 80), extra.id)
  })

  await t.test('ClientIP affinity: sticky, sliding, expiring, per port, dropped with its endpoint', async (t) => {
    const c2 = '127.0.0.2'
    const c3 = '127.0.0.3'
    const c4 = '127.0.0.4'
    // Fresh cursor: c2 gets the first endpoint and keeps it.
    const first = await identify(affIp, 80, c2)
    t.equal(first, affA.id, 'first client gets the first endpoint')
    for (let i = 0; i < 4; i++) t.equal(await identify(affIp, 80, c2), first, `c2 sticky (${i + 1})`)
    t.equal(await identify(affIp, 80, c3), affB.id, 'a second client gets the next endpoint')
    // The last entry on port a is made after this reading of the clock (the test and meshlet share the clock).
    const lastEntryAfter = Date.now()
    t.equal(await identify(affIp, 80, c4), affA.id, 'a third client wraps round (cursor now on the first endpoint)')
    let s = await m.status()
    t.equal(lbPorts(s, 'default/aff').find((p) => p.port === 'a')?.affinityEntries, 3, 'three entries on port a')

    // The sliding window's arithmetic (refresh by each connection, expiry at exactly the timeout) is checked with an
    // injected clock in affinity.test.ts: here a loaded machine may stall a connection past 2 s.

    // A separate table on port b: its own cursor, its own entry for c2.
    t.equal(await identify(affIp, 81, c2), affA2.id, 'port b: c2 picked by port b’s own rotation')
    t.equal(await identify(affIp, 81, c3), affB2.id, 'port b: c3 next')
    t.equal(await identify(affIp, 81, c3), affB2.id, 'port b: c3 sticky on port b')
    s = await m.status()
    t.equal(lbPorts(s, 'default/aff').find((p) => p.port === 'b')?.affinityEntries, 2, 'port b has its own two entries')

    // Expiry: nothing for 2 s, the sweep empties port a's table; then c2 is balanced again (the next pick on port a is
    // the second endpoint). Waiting for the sweep, not for a fixed time, keeps a slow machine from failing it.
    await m.waitForStatus((s) => lbPorts(s, 'default/aff').find((p) => p.port === 'a')?.affinityEntries === 0, 10_000)
    const idle = Date.now() - lastEntryAfter
    t.ok(idle >= 2000, `port a's entries expired after the 2 s timeout, not before (${idle} ms)`)
    t.equal(await identify(affIp, 80, c2), affB.id, 'after the timeout c2 is re-balanced to the next endpoint')
    t.equal(await identify(affIp, 80, c2), affB.id, 'and sticks to it')

    // The endpoint goes unready: c2 moves at once, without waiting for the timeout.
    m.writeManifest('aff-endpoints.yaml', affEndpoints([net.ip(211)], [net.ip(212)]))
    await m.waitForStatus((s) => lbPorts(s, 'default/aff').find((p) => p.port === 'a')?.usable.cluster === 1)
    t.equal(await identify(affIp, 80, c2), affA.id, 'unready endpoint: c2 re-balanced at once')
    // It comes back: the old entry is not restored; c2 stays where it was moved.
    m.writeManifest('aff-endpoints.yaml', affEndpoints([net.ip(211), net.ip(212)], []))
    await m.waitForStatus((s) => lbPorts(s, 'default/aff').find((p) => p.port === 'a')?.usable.cluster === 2)
    t.equal(await identify(affIp, 80, c2), affA.id, 'endpoint back: c2 keeps its new endpoint')
  })

  await t.test('no usable endpoint: refused at once, reopened when one appears', async (t) => {
    const times: number[] = []
    for (let i = 0; i < 5; i++) {
      const r = await connectError(emptyIp, 80)
      t.equal(r.code, 'ECONNREFUSED', 'TCP connect refused')
      times.push(r.ms)
    }
    times.sort((a, b) => a - b)
    t.ok(times[2]! < 50, `refused in < 50 ms (median ${times[2]!.toFixed(1)} ms)`)

    m.writeManifest('empty-endpoints.yaml', endpointsYaml('empty', [{ port: empty.port }], [net.ip(221)]))
    await waitListener(m, 'default/empty', (l) => l.state === 'open')
    t.equal(await identify(emptyIp, 80), empty.id, 'reopened: connects to the new endpoint')

    // Unready again: closed again.
    m.writeManifest('empty-endpoints.yaml', endpointsYaml('empty', [{ port: empty.port }], [], [net.ip(221)]))
    await waitListener(m, 'default/empty', (l) => l.state === 'closed')
    t.equal((await connectError(emptyIp, 80)).code, 'ECONNREFUSED', 'refused again once the endpoint is unready')
  })
})
