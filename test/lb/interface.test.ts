// --vip-mode interface in network namespaces (root only): meshlet nodes a and c each in their own namespace, linked by
// veth pairs to a bridge in a client namespace b, all on 198.18.N.0/24. A LoadBalancer address from a 198.18 pool
// is added to the elected node's interface only (MetalLB's per-address L2 election), and the client in b reaches it
// through ARP. Every namespace is named after this process and removed in teardown.

import t from 'tap'
import { createHash } from 'node:crypto'
import { execFile, spawn } from 'node:child_process'
import { promisify } from 'node:util'
import { startMeshlet } from '../helpers/meshlet.ts'
import { sleep } from './helpers.ts'

const run = promisify(execFile)

// Skipped, and reported as skipped, when not root; .ci/run fails when a test is skipped under root.
const skip =
  process.getuid?.() !== 0 ? 'interface mode needs root to create network namespaces (CI runs as root)' : false

t.test(
  'interface mode: only the elected node adds the LoadBalancer address; a client reaches it by ARP',
  { timeout: 80_000, skip },
  async (t) => {
    const n = process.pid % 250
    const subnet = `198.18.${n}`
    const ns = { a: `mlb-${process.pid}-a`, b: `mlb-${process.pid}-b`, c: `mlb-${process.pid}-c` }
    const ip = (...args: string[]) => run('ip', args)
    const inNs = (name: string, ...args: string[]) => run('ip', ['netns', 'exec', name, ...args])

    t.teardown(async () => {
      for (const name of Object.values(ns)) await ip('netns', 'del', name).catch(() => {})
    })
    for (const name of Object.values(ns)) {
      await ip('netns', 'add', name)
      await ip('-n', name, 'link', 'set', 'lo', 'up')
    }
    // Namespace b holds the bridge (and is the client); a and c hang off it on veth pairs named lb0 inside.
    await ip('-n', ns.b, 'link', 'add', 'br0', 'type', 'bridge')
    await ip('-n', ns.b, 'addr', 'add', `${subnet}.3/24`, 'dev', 'br0')
    await ip('-n', ns.b, 'link', 'set', 'br0', 'up')
    for (const [node, last] of [
      ['a', 1],
      ['c', 2],
    ] as const) {
      const peer = `p${node}`
      await ip('-n', ns.b, 'link', 'add', peer, 'type', 'veth', 'peer', 'name', 'lb0', 'netns', ns[node])
      await ip('-n', ns.b, 'link', 'set', peer, 'master', 'br0', 'up')
      await ip('-n', ns[node], 'addr', 'add', `${subnet}.${last}/24`, 'dev', 'lb0')
      await ip('-n', ns[node], 'link', 'set', 'lb0', 'up')
    }

    // A backend in each node namespace: a tiny HTTP server answering with its node name.
    const backends: ReturnType<typeof spawn>[] = []
    for (const [node, last] of [
      ['a', 1],
      ['c', 2],
    ] as const) {
      const code = `require('http').createServer((q,s)=>s.end('node-${node}')).listen(8080,'${subnet}.${last}')`
      const p = spawn('ip', ['netns', 'exec', ns[node], process.execPath, '-e', code], { stdio: 'ignore' })
      backends.push(p)
    }
    t.teardown(() => {
      for (const p of backends) p.kill()
    })

    const lbIp = `${subnet}.100`
    const manifests = `apiVersion: v1
kind: Node
metadata: { name: a }
---
apiVersion: v1
kind: Node
metadata: { name: c }
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: { name: netns, namespace: metallb-system }
spec: { addresses: ["${lbIp}/32"] }
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: { name: only-netns, namespace: metallb-system }
spec: { ipAddressPools: [netns] }
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: { name: quiet, namespace: metallb-system }
spec: { addresses: ["${subnet}.101/32"], autoAssign: false }
---
apiVersion: v1
kind: Service
metadata: { name: web-quiet, annotations: { metallb.io/address-pool: quiet } }
spec:
  type: LoadBalancer
  selector: { app: web }
  ports: [{ port: 80, targetPort: http }]
---
apiVersion: v1
kind: Pod
metadata: { name: web-a, labels: { app: web } }
spec: { nodeName: a, containers: [{ name: app, ports: [{ name: http, containerPort: 8080 }] }] }
status: { podIP: ${subnet}.1 }
---
apiVersion: v1
kind: Pod
metadata: { name: web-c, labels: { app: web } }
spec: { nodeName: c, containers: [{ name: app, ports: [{ name: http, containerPort: 8080 }] }] }
status: { podIP: ${subnet}.2 }
---
apiVersion: v1
kind: Service
metadata: { name: web }
spec:
  type: LoadBalancer
  selector: { app: web }
  ports: [{ port: 80, targetPort: http }]
`
    // The admin API would listen inside the namespace, out of this process's reach: off, and the logs tell the state.
    const start = (node: 'a' | 'c', last: number, cidr: string) =>
      startMeshlet(t, {
        manifests: { 'm.yaml': manifests },
        wrap: ['ip', 'netns', 'exec', ns[node]],
        waitReady: false,
        args: [
          '--node',
          node,
          '--node-address',
          `${subnet}.${last}`,
          '--service-cidr',
          cidr,
          '--vip-mode',
          'interface',
          '--vip-interface',
          'lb0',
          '--admin',
          'off',
        ],
      })
    const [ma, mc] = await Promise.all([start('a', 1, `198.19.${n}.0/26`), start('c', 2, `198.19.${n}.64/26`)])

    // MetalLB's election: candidates sorted by sha256("node#ip"), the first announces.
    const score = (node: string) => createHash('sha256').update(`${node}#${lbIp}`).digest('hex')
    const elected = score('a') < score('c') ? 'a' : 'c'
    const other = elected === 'a' ? 'c' : 'a'
    const winner = elected === 'a' ? ma : mc
    await winner.waitForLog((l) => l.msg === 'address added' && l.ip === lbIp, 20_000)
    // Both have added their ClusterIP by now (the other's log proves it is running in interface mode).
    await (elected === 'a' ? mc : ma).waitForLog((l) => l.msg === 'address added', 20_000)

    const addrs = async (node: 'a' | 'c') => (await ip('-n', ns[node], '-4', 'addr', 'show', 'dev', 'lb0')).stdout
    t.match(await addrs(elected), `inet ${lbIp}/32`, `node ${elected} (elected) has ${lbIp} on lb0`)
    t.notMatch(await addrs(other), `inet ${lbIp}/`, `node ${other} does not`)
    t.notMatch(
      (await addrs('a')) + (await addrs('c')),
      `inet ${subnet}.101/`,
      'an address from a pool no L2Advertisement covers is never announced',
    )

    // The client in namespace b reaches the address over the bridge (ARP answered by the elected node).
    let body = ''
    for (let i = 0; i < 40 && !body; i++) {
      body = await inNs(ns.b, 'curl', '-s', '--max-time', '2', `http://${lbIp}/`).then(
        (r) => r.stdout,
        () => '',
      )
      if (!body) await sleep(250)
    }
    t.match(body, /^node-[ac]$/, `client in b got an answer through ${lbIp}: ${body}`)
    const bodies = new Set<string>()
    for (let i = 0; i < 4; i++)
      bodies.add((await inNs(ns.b, 'curl', '-s', '--max-time', '2', `http://${lbIp}/`)).stdout)
    t.same([...bodies].sort(), ['node-a', 'node-c'], 'balanced over both nodes’ Pods (Cluster policy)')
    const neigh = (await ip('-n', ns.b, 'neigh', 'show', lbIp)).stdout
    const mac = /link\/ether ([0-9a-f:]+)/.exec((await ip('-n', ns[elected], 'link', 'show', 'lb0')).stdout)?.[1]
    t.ok(mac && neigh.includes(mac), `b’s ARP entry for ${lbIp} is node ${elected}’s MAC (${mac}): ${neigh.trim()}`)

    // Stopping the elected node removes the address from its interface.
    await winner.stop()
    t.notMatch(await addrs(elected), `inet ${lbIp}/`, 'removed on shutdown')
  },
)
