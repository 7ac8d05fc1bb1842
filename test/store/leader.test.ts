// etcd mode, the etcd leader stopped (issue 20): two meshlet nodes on a real 3-member etcd cluster (loopback ports
// 23741-23753) serve a Service through DNS, L4 (its ClusterIP) and L7 (an Ingress) while client loops run on every
// path of every node; the leader is killed and the two others elect a new one. No request may fail on any path:
// the data paths serve the Snapshot and never wait on etcd. A Service applied after the election reaches both
// nodes through their watches (resumed on another member, no relist).

import t from 'tap'
import { execFile, spawn } from 'node:child_process'
import { request } from 'node:http'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { MESHLET_BIN, startMeshlet, type MeshletProcess } from '../helpers/meshlet.ts'
import { decode, query, udpRaw } from '../dns/helpers.ts'
import { startEtcdCluster, etcdMissing } from './etcd-cluster.ts'

const BACKENDS = fileURLToPath(new URL('../compose/fixture-named-backends.ts', import.meta.url))
const PREFIX = `/ldr${process.pid}`
const POD_IP = '127.3.41.1'
const POD_PORT = 18081

const MANIFESTS = `apiVersion: v1
kind: Pod
metadata: { name: web-1, labels: { app: web } }
spec: { nodeName: n0, containers: [{ name: web, image: web, ports: [{ name: http, containerPort: ${POD_PORT} }] }] }
status: { podIP: ${POD_IP} }
---
apiVersion: v1
kind: Service
metadata: { name: web }
spec: { selector: { app: web }, ports: [{ port: 80, targetPort: http }] }
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: { name: web }
spec:
  rules:
    - host: web.test
      http: { paths: [{ path: /, pathType: Prefix, backend: { service: { name: web, port: { number: 80 } } } }] }
`

function run(args: readonly string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MESHLET_BIN, ...args], { timeout: 60_000 }, (err, _stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stderr })
    })
  })
}

/** One HTTP GET on a fresh connection (no keep-alive: every request goes through the data path's accept). */
function get(host: string, port: number, hostHeader?: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request(
      { host, port, path: '/', agent: false, timeout: 1000, headers: hostHeader ? { host: hostHeader } : {} },
      (res) => {
        let body = ''
        res.setEncoding('utf8').on('data', (c: string) => (body += c))
        res.on('end', () => resolve(res.statusCode === 200 && body.includes('Hostname: web-1')))
        res.on('error', () => resolve(false))
      },
    )
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', () => resolve(false))
    req.end()
  })
}

async function answers(node: MeshletProcess, name: string): Promise<string[]> {
  const reply = await udpRaw(node.dns!.port, query(name, 'A'), 1000)
  if (!reply) return []
  return (decode(reply).answers ?? []).flatMap((a) => (a.type === 'A' ? [String(a.data)] : []))
}

interface EndpointStatus {
  Endpoint: string
  Status: { header: { member_id: number }; leader: number }
}

t.test(
  'etcd mode: the etcd leader stopped → no request lost on DNS, L4 or L7',
  { skip: etcdMissing() ?? false, timeout: 180_000 },
  async (t) => {
    const backend = spawn(process.execPath, [BACKENDS, `web-1=${POD_IP}:${POD_PORT}`], {
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    t.teardown(() => {
      backend.kill('SIGKILL')
    })
    await new Promise<void>((resolve, reject) => {
      backend.stdout!.setEncoding('utf8').on('data', (c: string) => c.includes('listening') && resolve())
      backend.once('exit', () => reject(new Error('backend exited')))
    })

    const etcd = await startEtcdCluster(t, { basePort: 23740 })
    const dir = mkdtempSync(join(tmpdir(), 'meshlet-leader-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    writeFileSync(join(dir, 'web.yaml'), MANIFESTS)
    // apply allocates the ClusterIP by CAS from its --service-cidr, which must be the nodes' own (store/README.md).
    const cidr = `127.${100 + (process.pid % 100)}.0.0/16`
    const storeArgs = ['--store', etcd.url, '--etcd-prefix', PREFIX, '--service-cidr', cidr]
    const applied = await run(['apply', '-f', join(dir, 'web.yaml'), ...storeArgs])
    t.equal(applied.code, 0, `apply (${applied.stderr.trim()})`)

    // Both nodes run on this one host, and the ClusterIP is now one stored value (allocated by CAS at apply), so only
    // the first node can bind it: the second's L4 listener fails with EADDRINUSE and its /readyz stays 503. On real
    // hosts each node binds its own copy. The second node is therefore not waited ready, and its L4 path is not
    // probed (a connect to the ClusterIP from here would reach the first node's listener).
    // In order, so that the first node is the one that binds the ClusterIP.
    const nodes: MeshletProcess[] = []
    for (const [i, name] of ['n0', 'n1'].entries())
      nodes.push(await startMeshlet(t, { args: [...storeArgs, '--node', name, '--https', 'off'], waitReady: i === 0 }))
    const web = 'web.default.svc.cluster.local'
    const paths = nodes.map((n) => ({ node: n, clusterIp: '' }))
    for (const p of paths) {
      const svcOf = (st: Awaited<ReturnType<MeshletProcess['status']>>) =>
        st.snapshot?.services.find((x) => x.key === 'default/web')
      const st = await p.node.waitForStatus((s) => (svcOf(s)?.clusterIPs.length ?? 0) > 0, 15000)
      p.clusterIp = svcOf(st)!.clusterIPs[0]!
    }
    const probes = (p: (typeof paths)[number]): Record<string, () => Promise<boolean>> => ({
      dns: async () => (await answers(p.node, web)).includes(p.clusterIp),
      ...(p === paths[0] ? { l4: () => get(p.clusterIp, 80) } : {}),
      l7: () => get(p.node.http!.host, p.node.http!.port, 'web.test'),
    })
    // Every path of every node serves before the loops start (listeners open, routes compiled).
    for (const p of paths)
      for (const [name, probe] of Object.entries(probes(p))) {
        const end = Date.now() + 15000
        while (!(await probe()) && Date.now() < end) await sleep(50)
        t.ok(await probe(), `${name} serves on its node before the leader is stopped`)
      }

    let looping = true
    const counts = new Map<string, { ok: number; failed: number }>()
    const loops = paths.flatMap((p, i) =>
      Object.entries(probes(p)).map(async ([name, probe]) => {
        const c = { ok: 0, failed: 0 }
        counts.set(`n${i} ${name}`, c)
        for (let k = 0; looping && k < 5000; k++) {
          if (await probe()) c.ok++
          else c.failed++
          await sleep(10)
        }
      }),
    )

    await sleep(500)
    const statuses = async (members: readonly number[]) =>
      (
        await Promise.all(
          members.map((m) =>
            etcd.ctl(['endpoint', 'status', '-w', 'json'], m).then(
              (out) => JSON.parse(out) as EndpointStatus[],
              () => [] as EndpointStatus[],
            ),
          ),
        )
      ).flat()
    const before = await statuses([0, 1, 2])
    const leaderEntry = before.find((s) => s.Status.header.member_id === s.Status.leader)
    t.ok(leaderEntry, 'a leader among the three members')
    const leader = etcd.endpoints.indexOf(leaderEntry!.Endpoint.replace(/^https?:\/\//, ''))
    t.ok(leader >= 0, `the leader is member ${leader}`)
    const stoppedAt = Date.now()
    await etcd.stop(leader, 'SIGKILL')
    const rest = [0, 1, 2].filter((m) => m !== leader)
    let electedMs = -1
    for (let i = 0; i < 200 && Date.now() - stoppedAt < 20000; i++) {
      const now = await statuses(rest)
      if (
        now.length === 2 &&
        now.every((s) => s.Status.leader !== 0 && s.Status.leader !== leaderEntry!.Status.leader)
      ) {
        electedMs = Date.now() - stoppedAt
        break
      }
      await sleep(100)
    }
    t.ok(electedMs >= 0, `a new leader elected (${electedMs} ms after the kill)`)
    t.comment(`timing etcd leader killed → new leader seen: ${electedMs} ms`)

    // The watches carry on through another member: a Service applied now reaches both nodes.
    writeFileSync(
      join(dir, 'web2.yaml'),
      'apiVersion: v1\nkind: Service\nmetadata: { name: web2 }\nspec: { selector: { app: web }, ports: [{ port: 81, targetPort: http }] }\n',
    )
    const appliedAt = Date.now()
    t.equal((await run(['apply', '-f', join(dir, 'web2.yaml'), ...storeArgs])).code, 0, 'apply after the election')
    for (const [i, n] of nodes.entries()) {
      const end = Date.now() + 10000
      while ((await answers(n, 'web2.default.svc.cluster.local')).length === 0 && Date.now() < end) await sleep(20)
      t.ok((await answers(n, 'web2.default.svc.cluster.local')).length > 0, `node n${i} sees web2 after the election`)
    }
    t.comment(`timing apply after the election → both nodes answer web2: ${Date.now() - appliedAt} ms`)
    await sleep(1000)
    looping = false
    await Promise.all(loops)
    for (const [name, c] of counts) {
      t.comment(`${name}: ${c.ok} requests served, ${c.failed} failed`)
      t.equal(c.failed, 0, `${name}: no request lost while the leader was stopped`)
      t.ok(c.ok > 10, `${name}: the loop ran (${c.ok} requests)`)
    }
    const relists = await Promise.all(
      nodes.map(async (n) => ((await n.status()).planes as { store?: { relists: number } }).store?.relists),
    )
    t.same(relists, [0, 0], 'the watches resumed on another member without a relist')
  },
)
