// Two meshlet processes in --l4-mode nftables, one per node, each in a network namespace of its own on a bridge that
// lives in a third (the client's). A NodePort Service with externalTrafficPolicy Local answers on each node from that
// node's Pod only; the same Pods behind a Cluster-policy NodePort are reached from either node, the off-node one
// through DNAT, forwarding and masquerade (the reply must come back through the node the client asked). As root only
// (CI runs as root).

import t from 'tap'
import { spawn } from 'node:child_process'
import { startMeshlet } from '../helpers/meshlet.ts'
import { bridgeTopology, cleanupList, exec, inNs, must, until } from '../helpers/netns.ts'

const root = process.getuid?.() === 0
const nft = (await exec(['nft', '--version'])).code === 0
const skip = !root ? 'needs root (network namespaces, nftables)' : !nft ? 'nft not installed' : false

const NET = '10.231.7'
const LOCAL_PORT = 30091
const CLUSTER_PORT = 30092

t.test('two nodes, externalTrafficPolicy Local, nftables', { skip, timeout: 120_000 }, async (t) => {
  const cleanup = cleanupList(t)
  const ns = { lan: `mlt-2n-lan-${process.pid}`, a: `mlt-2n-a-${process.pid}`, b: `mlt-2n-b-${process.pid}` }
  const node = { a: `${NET}.11`, b: `${NET}.12` }
  const podIp = { a: `${NET}.21`, b: `${NET}.22` }
  await bridgeTopology(cleanup, {
    tag: `m2n${process.pid % 10000}`,
    lan: ns.lan,
    bridgeAddress: `${NET}.1/24`,
    namespaces: [ns.lan, ns.a, ns.b],
    hosts: [
      [ns.a, [node.a, podIp.a]],
      [ns.b, [node.b, podIp.b]],
    ],
  })
  // The Cluster policy sends node a's client to node b's Pod: node a forwards (meshlet does not set this).
  for (const n of [ns.a, ns.b]) await must(['ip', 'netns', 'exec', n, 'sysctl', '-qw', 'net.ipv4.ip_forward=1'])

  // A "Pod" per node: an HTTP server on the Pod address that names itself.
  for (const n of ['a', 'b'] as const) {
    const code = `require('http').createServer((q,s)=>s.end('pod-${n}')).listen(8080,'${podIp[n]}')`
    const p = spawn('ip', ['netns', 'exec', ns[n], process.execPath, '-e', code], { stdio: 'ignore' })
    cleanup.push(() => p.kill())
  }

  const manifests = `apiVersion: v1
kind: Node
metadata: { name: a }
---
apiVersion: v1
kind: Node
metadata: { name: b }
${(['a', 'b'] as const)
  .map(
    (n) => `---
apiVersion: v1
kind: Pod
metadata: { name: web-${n}, labels: { app: web } }
spec: { nodeName: ${n}, containers: [{ name: app, ports: [{ name: http, containerPort: 8080 }] }] }
status: { podIP: ${podIp[n]} }
`,
  )
  .join('')}---
apiVersion: v1
kind: Service
metadata: { name: local }
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: { app: web }
  ports: [{ port: 80, targetPort: http, nodePort: ${LOCAL_PORT} }]
---
apiVersion: v1
kind: Service
metadata: { name: cluster }
spec:
  type: NodePort
  selector: { app: web }
  ports: [{ port: 80, targetPort: http, nodePort: ${CLUSTER_PORT} }]
`
  const meshlets = await Promise.all(
    (['a', 'b'] as const).map((n) =>
      startMeshlet(t, {
        manifests: { 'm.yaml': manifests },
        wrap: ['ip', 'netns', 'exec', ns[n]],
        waitReady: false,
        // The admin API would listen inside the namespace, out of this process's reach: the logs tell the state.
        args: ['--l4-mode', 'nftables', '--node', n, '--node-address', node[n], '--admin', 'off'],
      }),
    ),
  )
  // Polled from the captured logs: waitForLog did not see this line in 20 s here although it had been written.
  for (const m of meshlets)
    await until('the nftables plane started', async () => m.logs.some((l) => l.l4Mode === 'nftables'), 20_000)

  const get = async (address: string, port: number) => {
    const r = await inNs(ns.lan, ['curl', '-s', '--max-time', '2', `http://${address}:${port}/`], 5_000)
    return r.code === 0 ? r.stdout : `curl exit ${r.code}`
  }

  for (const n of ['a', 'b'] as const) {
    await until(`node ${n}'s Local NodePort answers`, async () => (await get(node[n], LOCAL_PORT)) === `pod-${n}`)
    const seen = new Set<string>()
    for (let i = 0; i < 12; i++) seen.add(await get(node[n], LOCAL_PORT))
    t.same([...seen], [`pod-${n}`], `node ${n}, Local: only its own Pod, in 12 requests`)
  }
  for (const n of ['a', 'b'] as const) {
    const seen = new Set<string>()
    await until(
      `node ${n}'s Cluster NodePort reaches both Pods`,
      async () => {
        seen.add(await get(node[n], CLUSTER_PORT))
        return seen.has('pod-a') && seen.has('pod-b')
      },
      20_000,
      10,
    )
    t.same([...seen].sort(), ['pod-a', 'pod-b'], `node ${n}, Cluster: both Pods, the other node's through it`)
  }

  // Node b's Pod goes: node b's Local NodePort now refuses (never sends to node a), node a's is unchanged.
  for (const m of meshlets) m.writeManifest('m.yaml', manifests.replace(`status: { podIP: ${podIp.b} }`, ''))
  await until('node b refuses its Local NodePort', async () => /curl exit 7/.test(await get(node.b, LOCAL_PORT)))
  t.match(await get(node.b, LOCAL_PORT), /curl exit 7/, 'node b without a local endpoint: connection refused')
  t.equal(await get(node.a, LOCAL_PORT), 'pod-a', 'node a still serves from its Pod')

  for (const m of meshlets) t.equal(await m.stop('SIGTERM'), 0, 'clean exit')
  for (const n of [ns.a, ns.b])
    t.not((await inNs(n, ['nft', 'list', 'table', 'inet', 'meshlet'])).code, 0, `table gone in ${n}`)
})
