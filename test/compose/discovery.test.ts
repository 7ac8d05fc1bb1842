// Replica discovery through DNS (config/dns-discovery.ts): a fake Docker DNS on loopback answers changing replica
// sets; the synthetic Pods appear and disappear in the Store's Snapshot and Services select them.

import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { Store } from '../../model/store.ts'
import type { Snapshot } from '../../model/snapshot.ts'
import { parseCidr } from '../../model/ip.ts'
import { loadManifestText } from '../../config/load.ts'
import { DnsDiscovery, replicaPodName, startDiscovery } from '../../config/dns-discovery.ts'
import { startFakeDockerDns } from './fake-docker-dns.ts'

const log = pino({ level: 'silent' })

function manifests(opts: { dnsName?: string; interval?: number; label?: string; probe?: boolean } = {}): string {
  const interval = opts.interval === undefined ? '' : `\n    meshlet.io/resolve-interval-seconds: "${opts.interval}"`
  const probe = opts.probe
    ? `
        readinessProbe:
          httpGet: {path: /healthz, port: http}
          periodSeconds: 1`
    : ''
  return `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations:
    meshlet.io/replicas-from-dns: ${opts.dnsName ?? 'web'}${interval}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web, tier: ${opts.label ?? 'front'}}
    spec:
      containers:
      - name: web
        image: nginx
        ports: [{name: http, containerPort: 8080}]${probe}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
`
}

function load(text: string) {
  const r = loadManifestText(text, 'compose.yaml')
  if (r.errors.length > 0) throw new Error(JSON.stringify(r.errors))
  return r
}

async function setup(t: { teardown(fn: () => unknown): void }, opts: { minRefreshGapMs?: number } = {}) {
  const dns = await startFakeDockerDns()
  t.teardown(() => dns.close())
  const store = new Store({ nodeName: 'node-a', serviceCidrs: [parseCidr('127.97.0.0/16')!] })
  const metrics = new Registry()
  const feed = startDiscovery({ store, resolvers: [dns.address], nodeName: 'node-a', log, metrics })
  t.teardown(() => feed.close())
  // The store's snapshots, newest last.
  const snapshots: Snapshot[] = []
  store.subscribe((s) => snapshots.push(s))
  const until = async (pred: (s: Snapshot) => boolean, what: string, timeoutMs = 10000): Promise<Snapshot> => {
    const end = Date.now() + timeoutMs
    for (;;) {
      const s = store.current
      if (s && pred(s)) return s
      if (Date.now() > end)
        throw new Error(
          `not seen in ${timeoutMs} ms: ${what}; last: ${JSON.stringify(s?.services.map((x) => x.ports.map((p) => p.endpoints.map((e) => e.ip))))}`,
        )
      await sleep(10)
    }
  }
  return { dns, store, feed, metrics, snapshots, until, opts }
}

const webIps = (s: Snapshot) =>
  s.services.find((x) => x.key === 'default/web')?.ports[0]?.endpoints.map((e) => e.ip) ?? []

t.test('replicas appear as Pods, Services select them; scaling 3 → 2 → 0 → 1', async (t) => {
  const { dns, feed, until } = await setup(t)
  dns.set('web', ['127.0.0.12', '127.0.0.10', '127.0.0.11'])
  const r = load(manifests())
  const start = Date.now()
  feed.setObjects(r.objects, r.errors)
  const s = await until((s) => webIps(s).length === 3, '3 endpoints')
  t.ok(Date.now() - start < 3000, `resolved in ${Date.now() - start} ms`)
  t.same(webIps(s), ['127.0.0.10', '127.0.0.11', '127.0.0.12'])
  const pods = s.pods.filter((p) => p.pod.meta.annotations['meshlet.io/deployment'] === 'web')
  t.same(
    pods.map((p) => p.key),
    ['default/web-127-0-0-10', 'default/web-127-0-0-11', 'default/web-127-0-0-12'],
  )
  const p0 = pods[0]!.pod
  t.same(p0.meta.labels, { app: 'web', tier: 'front' })
  t.equal(p0.spec.nodeName, 'node-a', 'nodeName from --node when the template names none')
  t.same(p0.status, { podIP: '127.0.0.10', podIPs: ['127.0.0.10'] })
  t.equal(p0.spec.containers[0]?.ports[0]?.containerPort, 8080)
  t.equal(s.services.find((x) => x.key === 'default/web')!.ports[0]!.endpoints[0]!.port, 8080, 'targetPort by name')
  t.ok(
    s.services.find((x) => x.key === 'default/web')!.ports[0]!.endpoints.every((e) => e.ready),
    'no probe: ready',
  )
  t.ok(
    s.objects.some((o) => o.kind === 'Deployment'),
    'the Deployment itself is in the Snapshot',
  )

  dns.set('web', ['127.0.0.10', '127.0.0.12'])
  await feed.discovery.refresh()
  const s2 = await until((s) => webIps(s).length === 2, '2 endpoints')
  t.same(webIps(s2), ['127.0.0.10', '127.0.0.12'])
  const kept = s2.pods.find((p) => p.key === 'default/web-127-0-0-10')!.pod
  t.equal(kept, p0, 'a replica that stays is the same Pod object (health keeps its probe state)')

  dns.set('web', [])
  await feed.discovery.refresh()
  await until((s) => webIps(s).length === 0 && s.pods.length === 0, 'NXDOMAIN: no replicas')
  t.equal(feed.status().deployments[0]?.lastError, null, 'NXDOMAIN is an answer, not a failure')

  dns.set('web', ['127.0.0.13'])
  await feed.discovery.refresh()
  await until((s) => webIps(s).join() === '127.0.0.13', 'scaled back to 1')
  const st = feed.status()
  t.same(st.resolvers, [dns.address])
  t.match(st.deployments[0], {
    deployment: 'default/web',
    dnsName: 'web',
    intervalSeconds: 5,
    addresses: ['127.0.0.13'],
    pods: ['web-127-0-0-13'],
  })
  t.ok(dns.queries.includes('A web') && dns.queries.includes('AAAA web'), 'asks A and AAAA')
})

t.test('periodic re-resolution follows meshlet.io/resolve-interval-seconds', async (t) => {
  const { dns, feed, until } = await setup(t)
  dns.set('api', ['127.0.0.20'])
  const r = load(manifests({ dnsName: 'api', interval: 1 }))
  feed.setObjects(r.objects, r.errors)
  await until((s) => webIps(s).length === 1, 'first answer')
  dns.set('api', ['127.0.0.20', '127.0.0.21'])
  const t0 = Date.now()
  await until((s) => webIps(s).length === 2, 'second replica seen without refresh()', 5000)
  t.ok(Date.now() - t0 < 3000, `seen after ${Date.now() - t0} ms (interval 1 s)`)
})

t.test('a resolver that fails keeps the last known replicas; recovery clears the error', async (t) => {
  const dns = await startFakeDockerDns()
  t.teardown(() => dns.close())
  let changes = 0
  const d = new DnsDiscovery({
    resolvers: [dns.address],
    nodeName: 'n',
    log,
    onChange: () => changes++,
    timeoutMs: 200,
  })
  t.teardown(() => d.close())
  dns.set('web', ['127.0.0.30', '127.0.0.31'])
  await d.update(load(manifests()).objects)
  t.same(
    d.pods().map((p) => p.status.podIP),
    ['127.0.0.30', '127.0.0.31'],
  )
  t.equal(changes, 1)

  dns.mode = 'silent'
  await d.refresh()
  t.same(
    d.pods().map((p) => p.status.podIP),
    ['127.0.0.30', '127.0.0.31'],
    'timeouts keep the replicas',
  )
  t.match(d.status().deployments[0]!.lastError, /ETIMEOUT/)
  dns.mode = 'servfail'
  await sleep(1100) // the on-demand gap
  await d.refresh()
  t.same(d.pods().length, 2, 'SERVFAIL keeps the replicas')
  t.match(d.status().deployments[0]!.lastError, /ESERVFAIL/)
  t.equal(changes, 1, 'no change published while failing')

  dns.mode = 'answer'
  dns.set('web', ['127.0.0.31'])
  await sleep(1100)
  await d.refresh()
  t.same(
    d.pods().map((p) => p.status.podIP),
    ['127.0.0.31'],
  )
  t.equal(d.status().deployments[0]!.lastError, null)
  t.ok(d.status().deployments[0]!.failures >= 2)
})

t.test('on-demand refreshes are coalesced and spaced', async (t) => {
  const dns = await startFakeDockerDns()
  t.teardown(() => dns.close())
  const d = new DnsDiscovery({ resolvers: [dns.address], nodeName: 'n', log, onChange: () => {}, minRefreshGapMs: 500 })
  t.teardown(() => d.close())
  dns.set('web', ['127.0.0.40'])
  await d.update(load(manifests()).objects)
  const before = dns.queries.length
  await Promise.all(Array.from({ length: 20 }, () => d.refresh()))
  t.equal(dns.queries.length - before, 2, '20 calls inside the gap: one resolution (A + AAAA)')
})

t.test(
  'reloads: same Deployment keeps Pods; new template makes new Pods; new name re-resolves; removal drops',
  async (t) => {
    const dns = await startFakeDockerDns()
    t.teardown(() => dns.close())
    let changes = 0
    const d = new DnsDiscovery({ resolvers: [dns.address], nodeName: 'n', log, onChange: () => changes++ })
    t.teardown(() => d.close())
    dns.set('web', ['127.0.0.50'])
    dns.set('web2', ['127.0.0.51', '127.0.0.52'])
    await d.update(load(manifests()).objects)
    const p = d.pods()[0]!
    await d.update(load('# moved\n' + manifests()).objects)
    t.equal(d.pods()[0], p, 'a re-parsed identical Deployment keeps the Pod objects')
    t.equal(changes, 1)

    await d.update(load(manifests({ label: 'back' })).objects)
    t.equal(changes, 2)
    t.not(d.pods()[0], p)
    t.same(d.pods()[0]!.meta.labels, { app: 'web', tier: 'back' }, 'template change applies to the same addresses')

    await d.update(load(manifests({ dnsName: 'web2' })).objects)
    t.same(
      d.pods().map((x) => x.status.podIP),
      ['127.0.0.51', '127.0.0.52'],
      'new name resolved at once',
    )

    await d.update([])
    t.same(d.pods(), [])
    t.same(d.status().deployments, [])
  },
)

t.test('a replica Pod turning unready triggers a resolution of its Deployment', async (t) => {
  const { dns, feed, store, until } = await setup(t)
  dns.set('web', ['127.0.0.60', '127.0.0.61'])
  const r = load(manifests())
  feed.setObjects(r.objects, r.errors)
  await until(
    (s) => webIps(s).length === 2 && s.services[0]!.ports[0]!.endpoints.every((e) => e.ready),
    'ready replicas',
  )
  await sleep(1100) // past the on-demand gap since the first resolution
  dns.set('web', ['127.0.0.60'])
  const before = dns.queries.length
  // What health/ writes when a probe fails: the Pod is not ready. Discovery asks DNS again and the replica is gone.
  store.setPodHealth('default/web-127-0-0-61', { ready: false, started: true, restartCount: 0, reason: 'probe failed' })
  await until((s) => webIps(s).join() === '127.0.0.60' && s.pods.length === 1, 'gone after the on-demand refresh', 5000)
  t.ok(dns.queries.length > before)
})

t.test('template probes are carried (named ports resolved); probed replicas start not ready', async (t) => {
  const { dns, feed, until } = await setup(t)
  dns.set('web', ['127.0.0.70'])
  const r = load(manifests({ probe: true }))
  feed.setObjects(r.objects, r.errors)
  const s = await until((s) => webIps(s).length === 1, 'one replica')
  const pod = s.pods[0]!.pod
  t.match(pod.spec.containers[0]!.readinessProbe, {
    handler: { type: 'httpGet', port: 8080, path: '/healthz' },
    periodSeconds: 1,
  })
  t.equal(s.services[0]!.ports[0]!.endpoints[0]!.ready, false, 'gated by readiness until health/ says ready')
})

t.test('metrics', async (t) => {
  const { dns, feed, until, metrics } = await setup(t)
  dns.set('web', ['127.0.0.80', '127.0.0.81'])
  const r = load(manifests())
  feed.setObjects(r.objects, r.errors)
  await until((s) => webIps(s).length === 2, 'two replicas')
  const text = await metrics.metrics()
  t.match(text, /meshlet_discovery_resolutions_total\{result="ok"\} [1-9]/)
  t.match(text, /meshlet_discovery_replicas\{deployment="default\/web"\} 2/)
})

t.test('pod names', async (t) => {
  t.equal(replicaPodName('web', '198.18.0.5'), 'web-198-18-0-5')
  t.equal(replicaPodName('web', 'fd00::5'), 'web-fd00-0-0-0-0-0-0-5', 'IPv6 in full: never a trailing or doubled dash')
})
