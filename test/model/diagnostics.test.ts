// diagnostics_channel events (model/diagnostics.ts, ARCHITECTURE.md "Diagnostics channels") as a subscriber sees them
// from real planes: a proxy listener opened and one that fails on a taken port, a Snapshot applied, an upstream connect
// failure; a DNS listener. Nothing is published to nobody: the channels have no subscribers outside this test.

import t from 'tap'
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { createServer } from 'node:net'
import type { AddressInfo } from 'node:net'
import type { ListenerMessage, SnapshotAppliedMessage, UpstreamConnectErrorMessage } from '../../model/diagnostics.ts'
import { get, ingress, pod, service, startRouter } from '../proxy/helpers.ts'
import { startPlane } from '../dns/helpers.ts'

function collect<M>(t: { teardown(fn: () => unknown): void }, name: string): M[] {
  const seen: M[] = []
  const fn = (m: unknown) => seen.push(m as M)
  subscribe(name, fn)
  t.teardown(() => unsubscribe(name, fn))
  return seen
}

/** A loopback port with nothing listening: bound, then closed. */
async function deadPort(): Promise<number> {
  const s = createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()))
  const port = (s.address() as AddressInfo).port
  await new Promise((r) => s.close(r))
  return port
}

t.test('proxy: listener opened and failed, Snapshot applied, upstream connect error', async (t) => {
  const opened = collect<ListenerMessage>(t, 'meshlet:listener:opened')
  const failed = collect<ListenerMessage>(t, 'meshlet:listener:failed')
  const applied = collect<SnapshotAppliedMessage>(t, 'meshlet:snapshot:applied')
  const connectErrors = collect<UpstreamConnectErrorMessage>(t, 'meshlet:upstream:connect-error')
  const port = await deadPort()
  const r = await startRouter(t, [
    service('web'),
    pod('web-1', 'web', '127.0.0.1', port),
    ingress('i', [{ paths: [['/', 'Prefix', 'web']] }]),
  ])
  t.match(
    opened.find((m) => m.component === 'proxy'),
    { listener: 'http', address: '127.0.0.1', port: r.http.port, error: null },
  )
  const before = applied.filter((m) => m.component === 'proxy').length
  r.set([service('web'), pod('web-1', 'web', '127.0.0.1', port), ingress('j', [{ paths: [['/', 'Prefix', 'web']] }])])
  const mine = applied.filter((m) => m.component === 'proxy')
  t.equal(mine.length, before + 1, 'one event per Snapshot applied')
  t.equal(mine.at(-1)?.version, r.store.current?.version)
  t.ok(mine.at(-1)!.durationSeconds >= 0 && mine.at(-1)!.durationSeconds < 5, 'a duration in seconds')

  t.equal((await get(r, 'h', '/')).status, 502, 'the only endpoint refuses')
  t.match(connectErrors[0], { component: 'proxy', service: 'default/web', address: '127.0.0.1', port })
  t.type(connectErrors[0]?.error, Error)

  // A second router on the taken port fails to open its listener.
  await t.rejects(startRouter(t, [], { options: { http: { host: '127.0.0.1', port: r.http.port } } }))
  t.match(
    failed.find((m) => m.component === 'proxy'),
    { listener: 'http', port: r.http.port },
  )
  t.type(failed.find((m) => m.component === 'proxy')?.error, Error)
})

t.test('dns: listener opened', async (t) => {
  const opened = collect<ListenerMessage>(t, 'meshlet:listener:opened')
  const dns = await startPlane(t, { yaml: null })
  t.match(
    opened.find((m) => m.component === 'dns'),
    { listener: 'dns', address: '127.0.0.1', port: dns.port, error: null },
  )
})
