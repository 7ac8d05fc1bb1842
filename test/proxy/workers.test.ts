// --workers 2 end to end (issue 16): `meshlet up` with the Ingress listeners in two worker threads sharing the ports.
// Real clients on fresh connections: both workers answer, a manifest edit reaches both, /metrics adds their counts up,
// stop leaves no thread behind.

import t from 'tap'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { readdirSync, readFileSync } from 'node:fs'
import { connect } from 'node:tls'
import { Agent, request } from 'undici'
import { startMeshlet } from '../helpers/meshlet.ts'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { loadManifestText } from '../../config/load.ts'
import { Store } from '../../model/store.ts'
import { startProxy } from '../../proxy/index.ts'
import { testRuntimeOptions } from '../helpers/options.ts'

interface WorkerRow {
  worker: number
  listening: boolean
  snapshot: number
  requests: number
}

const manifests = (backendPort: number, paths: string[]) => `apiVersion: v1
kind: Service
metadata: { name: echo, namespace: default }
spec:
  selector: { app: echo }
  ports: [{ name: http, port: 80, targetPort: ${backendPort} }]
---
apiVersion: v1
kind: Pod
metadata: { name: echo-1, namespace: default, labels: { app: echo } }
spec:
  nodeName: test-node
  containers: [{ name: c, ports: [{ name: http, containerPort: ${backendPort} }] }]
status: { podIP: 127.0.0.1, podIPs: [{ ip: 127.0.0.1 }] }
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: { name: web, namespace: default }
spec:
  ingressClassName: meshlet
  rules:
  - http:
      paths:
${paths.map((p) => `      - { path: ${p}, pathType: Prefix, backend: { service: { name: echo, port: { number: 80 } } } }`).join('\n')}
`

/** Names of the proxy worker threads of a process (Node names a worker's thread after its `name`), from /proc. */
function proxyThreads(pid: number | 'self'): string[] {
  return readdirSync(`/proc/${pid}/task`)
    .map((t) => {
      try {
        return readFileSync(`/proc/${pid}/task/${t}/comm`, 'utf8').trim()
      } catch {
        return '' // ended meanwhile
      }
    })
    .filter((n) => n.startsWith('proxy-'))
    .sort()
}

/** `n` GETs, each on a new connection, so SO_REUSEPORT's hash spreads them over the workers. */
async function getMany(port: number, path: string, n: number): Promise<number[]> {
  const codes: number[] = []
  for (let i = 0; i < n; i++) {
    const agent = new Agent({ pipelining: 0 })
    try {
      const res = await request(`http://127.0.0.1:${port}${path}`, { dispatcher: agent, headersTimeout: 5000 })
      await res.body.text()
      codes.push(res.statusCode)
    } finally {
      await agent.close()
    }
  }
  return codes
}

t.test('--workers 2: shared ports, both workers serve, Snapshots reach both, one /metrics', async (t) => {
  const backend: Server = createServer((req, res) => res.end(`echo ${req.url}`))
  await new Promise<void>((r) => backend.listen(0, '127.0.0.1', () => r()))
  t.teardown(() => backend.close())
  const backendPort = (backend.address() as AddressInfo).port

  const m = await startMeshlet(t, {
    manifests: { 'web.yaml': manifests(backendPort, ['/a']) },
    args: ['--workers', '2', '--dns', 'off'],
  })
  const httpPort = m.http!.port
  const rows = async () => ((await m.status()).planes.proxy as unknown as { workers: WorkerRow[] }).workers
  t.equal((await rows()).length, 2, 'two workers in /status')

  t.same(proxyThreads(m.proc.pid!), ['proxy-0', 'proxy-1'], 'two proxy worker threads in the process')
  const codes = await getMany(httpPort, '/a/x', 40)
  t.same(new Set(codes), new Set([200]), '40 requests on fresh connections all answered 200')
  const served = await m.waitForStatus(
    (s) =>
      ((s.planes.proxy as unknown as { workers: WorkerRow[] }).workers ?? []).reduce((a, w) => a + w.requests, 0) >= 40,
    5000,
  )
  const perWorker = (served.planes.proxy as unknown as { workers: WorkerRow[] }).workers.map((w) => w.requests)
  t.ok(
    perWorker.every((n) => n > 0),
    `both workers received traffic (${perWorker.join(', ')})`,
  )

  // https: every worker presents the one default certificate the main thread generated.
  const fingerprints = new Set<string>()
  for (let i = 0; i < 10; i++) {
    fingerprints.add(
      await new Promise<string>((resolve, reject) => {
        const s = connect({ host: '127.0.0.1', port: m.https!.port, rejectUnauthorized: false }, () => {
          resolve(s.getPeerCertificate().fingerprint256)
          s.destroy()
        })
        s.once('error', reject)
      }),
    )
  }
  t.equal(fingerprints.size, 1, 'one default certificate on every https connection')

  const metrics = await m.metrics()
  const total = [...metrics.matchAll(/^meshlet_proxy_requests_total\{[^}]*code="2xx"[^}]*\} (\d+)/gm)].reduce(
    (a, x) => a + Number(x[1]),
    0,
  )
  t.equal(total, 40, '/metrics adds both workers up: 40 2xx')
  t.match(metrics, /meshlet_proxy_request_duration_seconds_count\{[^}]*\} 40/, 'histogram aggregated too')

  // A manifest edit: a new path, served by both workers once each has the new Snapshot.
  const v0 = (await m.status()).planes.proxy as unknown as { snapshot: number }
  m.writeManifest('web.yaml', manifests(backendPort, ['/a', '/b']))
  const updated = await m.waitForStatus(
    (s) => (s.planes.proxy as unknown as { workers: WorkerRow[] }).workers.every((w) => w.snapshot > v0.snapshot),
    10_000,
  )
  t.ok(updated, 'both workers applied the new Snapshot')
  const after = await getMany(httpPort, '/b/y', 20)
  t.same(new Set(after), new Set([200]), 'the new path answers on every connection (both workers)')

  t.equal(await m.stop(), 0, 'one process to stop; it exits 0')
  t.equal((await rows().catch(() => null)) ?? null, null, 'nothing answers after stop')
})

t.test('close() ends every worker thread; the process keeps running', async (t) => {
  const backend: Server = createServer((_req, res) => res.end('ok'))
  await new Promise<void>((r) => backend.listen(0, '127.0.0.1', () => r()))
  t.teardown(() => backend.close())
  const reports: string[] = []
  const store = new Store({ nodeName: 'test-node', serviceCidrs: [] })
  const loaded = loadManifestText(manifests((backend.address() as AddressInfo).port, ['/']), 'web.yaml')
  store.setObjects(loaded.objects, loaded.errors)
  store.flush()
  const plane = await startProxy({
    store,
    options: testRuntimeOptions({ http: { host: '127.0.0.1', port: 0 }, proxyWorkers: 2 }),
    log: pino({ level: 'silent' }),
    metrics: new Registry(),
    reporter: { report: (service, ip, port, ok) => reports.push(`${service} ${ip}:${port} ${ok}`) },
  })
  let closed = false
  t.teardown(() => (closed ? undefined : plane.close(Date.now())))
  for (let i = 0; i < 100 && !plane.ready(); i++) await new Promise((r) => setTimeout(r, 50))
  t.ok(plane.ready(), 'ready once both workers applied the Snapshot')
  t.same(proxyThreads('self'), ['proxy-0', 'proxy-1'], 'two worker threads')
  const port = (plane.status() as { listeners: { http: { port: number } } }).listeners.http.port
  t.same(new Set(await getMany(port, '/', 4)), new Set([200]), 'served')
  const backendPort = (backend.address() as AddressInfo).port
  for (let i = 0; i < 40 && reports.length === 0; i++) await new Promise((r) => setTimeout(r, 25))
  t.ok(
    reports.length > 0 && reports.every((r) => r === `default/echo 127.0.0.1:${backendPort} true`),
    `upstream outcomes reach the main thread's reporter (${reports.join('; ')})`,
  )
  await plane.close(Date.now() + 1000)
  closed = true
  t.same(proxyThreads('self'), [], 'no proxy thread left after close()')
})
