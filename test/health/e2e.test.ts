// End to end through the real CLI (`meshlet up`): a failing backend leaves headless DNS answers (dig) and L4
// rotation (connections to the ClusterIP), shows in /status and /metrics, and comes back when it recovers.

import t from 'tap'
import { execFile } from 'node:child_process'
import { createServer, type Server } from 'node:http'
import { connect } from 'node:net'
import { promisify } from 'node:util'
import { startMeshlet } from '../helpers/meshlet.ts'
import { serviceOf } from '../helpers/status.ts'
import { pollUntil } from '../helpers/wait.ts'

t.test('a failing endpoint leaves dig answers and L4 rotation, and returns', { timeout: 60_000 }, async (t) => {
  // Loopback addresses unique to this process, so parallel test files never share them.
  const net = `127.${200 + (process.pid % 50)}.${process.pid % 250}`
  const ips = [`${net}.1`, `${net}.2`]
  const failing = new Set<string>()
  const servers: Server[] = []
  let port = 0
  for (const ip of ips) {
    const s = createServer((req, res) => {
      if (req.url === '/healthz' && failing.has(ip)) res.writeHead(500).end()
      else res.writeHead(200).end(ip)
    })
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject)
      s.listen(port, ip, () => resolve())
    })
    port = (s.address() as { port: number }).port
    servers.push(s)
  }
  t.teardown(() =>
    Promise.all(
      servers.map(
        (s) =>
          new Promise((r) => {
            s.closeAllConnections()
            s.close(r)
          }),
      ),
    ),
  )
  const podYaml = (name: string, ip: string) => `
apiVersion: v1
kind: Pod
metadata: { name: ${name}, labels: { app: web } }
spec:
  containers:
    - name: app
      ports: [{ name: http, containerPort: ${port} }]
      readinessProbe:
        httpGet: { path: /healthz, port: http }
        periodSeconds: 1
        failureThreshold: 2
status: { podIP: ${ip} }
`
  const m = await startMeshlet(t, {
    manifests: {
      'web.yaml': `
apiVersion: v1
kind: Service
metadata: { name: web-headless }
spec:
  clusterIP: None
  selector: { app: web }
  ports: [{ port: 80, targetPort: http }]
---
apiVersion: v1
kind: Service
metadata: { name: web }
spec:
  selector: { app: web }
  ports: [{ port: 80, targetPort: http }]
---${podYaml('web-1', ips[0]!)}---${podYaml('web-2', ips[1]!)}`,
    },
  })
  const dig = async () => {
    const { stdout } = await promisify(execFile)('dig', [
      `@${m.dns!.host}`,
      '-p',
      String(m.dns!.port),
      '+short',
      '+tries=1',
      '+time=2',
      'web-headless.default.svc.cluster.local',
      'A',
    ])
    return stdout.trim().split('\n').filter(Boolean).sort()
  }
  const status = await m.waitForStatus(
    (s) => serviceOf(s, 'default/web')?.ports[0]?.endpoints.filter((e) => e.ready).length === 2,
    10_000,
  )
  const vip = serviceOf(status, 'default/web')!.clusterIPs[0]!
  t.same(await dig(), ips, 'both endpoints answered')
  /** Which backends 8 fresh L4 connections to the ClusterIP reach. */
  const reached = async () => {
    const seen = new Set<string>()
    for (let i = 0; i < 8; i++) {
      const body = await new Promise<string>((resolve, reject) => {
        const s = connect({ host: vip, port: 80 }, () =>
          s.write(`GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`),
        )
        let data = ''
        s.setEncoding('utf8')
          .on('data', (c) => (data += c))
          .on('end', () => resolve(data))
          .on('error', reject)
      })
      seen.add(/127\.\d+\.\d+\.\d+/.exec(body.slice(body.indexOf('\r\n\r\n') + 4))?.[0] ?? body)
    }
    return [...seen].sort()
  }
  t.same(await reached(), ips, 'L4 reaches both')

  failing.add(ips[1]!)
  const t0 = Date.now()
  let answers = await pollUntil(dig, (a) => a.length === 1, 2000 + 2500, 100)
  t.same(answers, [ips[0]], `failing endpoint gone from dig within the bound (${Date.now() - t0} ms)`)
  t.same(await reached(), [ips[0]], 'L4 no longer reaches it')
  const st = await m.status()
  const pod = st.planes.health?.pods.find((p) => p.pod === 'default/web-2')
  t.equal(pod?.ready, false)
  t.equal(pod?.containers[0]?.probes[0]?.lastMessage, 'HTTP probe failed with statuscode: 500')
  t.match(
    await m.metrics(),
    /meshlet_health_probe_results_total\{kind="readiness",type="httpGet",result="failure"\} [1-9]/,
  )

  failing.delete(ips[1]!)
  const t1 = Date.now()
  answers = await pollUntil(dig, (a) => a.length === 2, 1000 + 2500, 100)
  t.same(answers, ips, `back in dig answers after recovery (${Date.now() - t1} ms)`)
  t.same(await reached(), ips, 'and in L4 rotation')
})
