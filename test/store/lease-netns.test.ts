// etcd mode, membership by lease, in network namespaces (root only): three meshlet nodes on one bridge, a 3-member
// etcd cluster in the bridge's namespace, a client. The LoadBalancer address's owner is elected from the nodes
// holding a lease; SIGKILL of the owner moves the address to another node within the lease TTL + 1 s (its lease
// expires in etcd, the others see its key go), learnt by the client through gratuitous ARP; the killed node,
// restarted, removes the address its killed run left and takes it back only after the current owner released it
// (PREFIX/owners/<ip>, store/l2-owners.ts): no node adds the address while another holds it. The owner cut off from
// etcd (nftables) stops announcing before another node takes over, keeps serving its ClusterIP, and catches up from
// the watch once healed.
//
//   lanL-PID (br0 198.18.6.1; etcd members 198.18.6.1:23721-23723)
//     ├─ la/lb/lc-PID  nodes a, b, c: eth0 198.18.6.2/.3/.4, one Pod each (198.18.6.10/.20/.30)
//     └─ lcl-PID       client 198.18.6.100

import t, { type Test } from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { bridgeTopology, cleanupList, exec, inNs, must, until } from '../helpers/netns.ts'
import { MESHLET_BIN, startMeshlet, type MeshletProcess } from '../helpers/meshlet.ts'
import { etcdMissing, startEtcdCluster } from './etcd-cluster.ts'

const BACKENDS = fileURLToPath(new URL('../compose/fixture-named-backends.ts', import.meta.url))
const which = (cmd: string) => ['/usr/bin', '/usr/sbin', '/bin', '/sbin'].some((d) => existsSync(`${d}/${cmd}`))
const skip =
  process.getuid?.() !== 0
    ? 'needs root (network namespaces); CI runs it as root'
    : !['ip', 'curl', 'arping', 'nft'].every(which)
      ? 'needs ip, curl, arping and nft (Debian nftables)'
      : (etcdMissing() ?? false)

const PID = process.pid
const NODES = ['a', 'b', 'c'] as const
type NodeName = (typeof NODES)[number]
const NS = { lan: `lanL-${PID}`, a: `la-${PID}`, b: `lb-${PID}`, c: `lc-${PID}`, client: `lcl-${PID}` } as const
const NODE_IP: Record<NodeName, string> = { a: '198.18.6.2', b: '198.18.6.3', c: '198.18.6.4' }
const POD_IP: Record<NodeName, string> = { a: '198.18.6.10', b: '198.18.6.20', c: '198.18.6.30' }
const LEASE_SECONDS = 3
const PREFIX = `/l2-${PID}`

const MANIFESTS =
  NODES.map(
    (n) => `apiVersion: v1
kind: Pod
metadata: { name: ${n}1, labels: { app: web } }
spec: { nodeName: ${n}, containers: [{ name: app, image: whoami, ports: [{ name: http, containerPort: 80 }] }] }
status: { podIP: ${POD_IP[n]} }
---
`,
  ).join('') +
  `apiVersion: v1
kind: Service
metadata: { name: web }
spec: { type: LoadBalancer, selector: { app: web }, ports: [{ port: 80, targetPort: http }] }
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: { name: bridge, namespace: metallb-system }
spec: { addresses: [198.18.6.240/29] }
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: { name: bridge, namespace: metallb-system }
spec: { ipAddressPools: [bridge] }
`
const LB_IP = '198.18.6.240'

async function run(t: Test) {
  const cleanup = cleanupList(t)
  await bridgeTopology(cleanup, {
    tag: `e${PID % 10000000}`,
    lan: NS.lan,
    bridgeAddress: '198.18.6.1/24',
    namespaces: Object.values(NS),
    hosts: [...NODES.map((n) => [NS[n], [NODE_IP[n], POD_IP[n]]] as const), [NS.client, ['198.18.6.100']]],
  })
  const etcd = await startEtcdCluster(t, { basePort: 23720, host: '198.18.6.1', wrap: ['ip', 'netns', 'exec', NS.lan] })

  const procs: ChildProcess[] = []
  cleanup.push(() => {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL')
  })
  for (const n of NODES) {
    const p = spawn('ip', ['netns', 'exec', NS[n], process.execPath, BACKENDS, `${n}1=${POD_IP[n]}:80`], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    procs.push(p)
    let out = ''
    p.stdout!.setEncoding('utf8').on('data', (c: string) => (out += c))
    await until(`backend of ${n}`, async () => out.includes('listening'), 15000)
  }

  const dir = mkdtempSync(join(tmpdir(), 'meshlet-lease-'))
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'web.yaml'), MANIFESTS)
  const storeArgs = ['--store', etcd.url, '--etcd-prefix', PREFIX]
  const applied = await inNs(
    NS.lan,
    [
      process.execPath,
      MESHLET_BIN,
      'apply',
      '-f',
      join(dir, 'web.yaml'),
      ...storeArgs,
      '--service-cidr',
      '198.18.7.0/24',
    ],
    30000,
  )
  t.equal(applied.code, 0, `apply (${applied.stderr.trim()})`)

  const meshlets: Partial<Record<NodeName, MeshletProcess>> = {}
  const startNode = async (n: NodeName) => {
    const m = await startMeshlet(t, {
      wrap: ['ip', 'netns', 'exec', NS[n]],
      waitReady: false,
      args: [
        ...storeArgs,
        '--node',
        n,
        '--node-lease-seconds',
        String(LEASE_SECONDS),
        '--node-address',
        NODE_IP[n],
        '--vip-mode',
        'interface',
        '--vip-interface',
        'eth0',
        '--service-cidr',
        '198.18.7.0/24',
        '--dns',
        'off',
        '--http',
        'off',
        '--https',
        'off',
        '--admin',
        `${NODE_IP[n]}:9901`,
      ],
    })
    meshlets[n] = m
    cleanup.push(() => m.stop('SIGKILL'))
    return m
  }
  const readyz = async (n: NodeName) =>
    (
      await inNs(NS[n], [
        'curl',
        '-s',
        '-o',
        '/dev/null',
        '-w',
        '%{http_code}',
        '--max-time',
        '2',
        `http://${NODE_IP[n]}:9901/readyz`,
      ])
    ).stdout
  await Promise.all(NODES.map(startNode))
  for (const n of NODES) await until(`node ${n} ready`, async () => (await readyz(n)) === '200', 20000)

  const holds = async (n: NodeName) =>
    (await exec(['ip', '-n', NS[n], '-4', 'addr', 'show', 'dev', 'eth0'])).stdout.includes(` ${LB_IP}/32 `)
  const holders = async () => {
    const h = await Promise.all(NODES.map(holds))
    return NODES.filter((_, i) => h[i])
  }
  const owner = (await until(
    'exactly one node holds the address',
    async () => {
      const h = await holders()
      return h.length === 1 ? h[0] : null
    },
    15000,
  ))!
  const hostOf = (s: string) => /Hostname: (\S+)/.exec(s)?.[1] ?? null
  const curl = () => inNs(NS.client, ['curl', '-s', '--max-time', '0.5', `http://${LB_IP}/`], 3000)
  t.match(hostOf((await curl()).stdout), /^[abc]1$/, `the client reaches ${LB_IP} through ${owner}`)

  // A client loop runs through the kill; SIGKILL gives the owner no chance to revoke its lease.
  let looping = true
  const samples: { at: number; ok: boolean }[] = []
  const loop = (async () => {
    for (let i = 0; looping && i < 2000; i++) {
      const r = await curl()
      samples.push({ at: Date.now(), ok: hostOf(r.stdout) !== null })
    }
  })()
  await until('client loop running', async () => samples.filter((s) => s.ok).length >= 3, 5000)
  const killedAt = Date.now()
  await meshlets[owner]!.stop('SIGKILL')
  const others = NODES.filter((n) => n !== owner)
  const movedAt = await until(
    'another node holds the address',
    async () => {
      const h = await holders()
      return h.some((n) => others.includes(n)) ? Date.now() : null
    },
    15000,
    20,
  )
  const newOwner = (await holders()).find((n) => others.includes(n))!
  const reachableAt = await until(
    'a request succeeds after the move',
    async () => {
      const s = samples.findLast((x) => x.ok)
      return s && s.at > movedAt ? s.at : null
    },
    10000,
    20,
  )
  looping = false
  await loop
  const moved = movedAt - killedAt
  const failed = samples.filter((s) => !s.ok)
  const lastFail = failed.at(-1)?.at ?? killedAt
  t.comment(`timing SIGKILL of ${owner} → address on ${newOwner}'s eth0: ${moved} ms (lease ${LEASE_SECONDS} s)`)
  t.comment(`timing SIGKILL of ${owner} → client served again: ${reachableAt - killedAt} ms`)
  t.comment(
    `client loop: ${samples.length} requests, ${failed.length} failed, last failure ${lastFail - killedAt} ms after the kill`,
  )
  t.ok(moved <= (LEASE_SECONDS + 1) * 1000, `moved within lease TTL + 1 s (${moved} ms)`)
  t.ok(
    failed.every((s) => s.at >= killedAt && s.at <= movedAt + 1000),
    'requests failed only inside the takeover window',
  )
  const neigh = await must(['ip', '-n', NS.client, 'neigh', 'show', LB_IP])
  t.match(neigh, /lladdr/, `the client learnt the new owner by ARP: ${neigh.trim()}`)

  // The killed node restarts. `ip monitor address` in every node's namespace records each add and removal of the
  // address as the kernel reports it (no sampling gaps). SIGKILL left the address on the killed node's eth0; the
  // restarted node must remove it before claiming anything, and no node may add the address while another holds it.
  const events: { at: number; node: NodeName; add: boolean }[] = []
  const monitors = NODES.map((n) => {
    const m = spawn('ip', ['-n', NS[n], 'monitor', 'address'], { stdio: ['ignore', 'pipe', 'ignore'] })
    let buf = ''
    m.stdout.setEncoding('utf8').on('data', (c: string) => {
      const at = Date.now()
      buf += c
      const lines = buf.split('\n')
      buf = lines.pop()!
      for (const line of lines)
        if (line.includes(` ${LB_IP}/32 `)) events.push({ at, node: n, add: !line.startsWith('Deleted') })
    })
    return m
  })
  cleanup.push(() => {
    for (const m of monitors) m.kill('SIGKILL')
  })
  await new Promise((r) => setTimeout(r, 300)) // the monitors subscribe before the first state is read
  const initial = new Set(await holders())
  t.ok(initial.has(owner), `the killed ${owner} still has the address on its eth0 (nobody removed it)`)
  const restartAt = Date.now()
  await startNode(owner)
  await until(
    `${owner} announces again or another node keeps the address alone`,
    async () => {
      const h = await holders()
      return h.length === 1 && Date.now() - restartAt > 8000 ? true : h.length === 1 && h[0] === owner
    },
    20000,
    50,
  )
  await new Promise((r) => setTimeout(r, 500)) // late monitor lines
  const held = new Set(initial)
  let addsWhileHeld = 0
  for (const e of events) {
    if (e.add) {
      if ([...held].some((n) => n !== e.node)) addsWhileHeld++
      held.add(e.node)
    } else held.delete(e.node)
  }
  const staleGone = events.find((e) => e.node === owner && !e.add)
  const ownerAdd = events.find((e) => e.node === owner && e.add)
  const otherGone = events.find((e) => e.node !== owner && !e.add)
  t.ok(staleGone && (!ownerAdd || staleGone.at <= ownerAdd.at), `the restarted ${owner} removed the address it left`)
  t.comment(
    `restart of ${owner}: the address it left removed ${staleGone ? staleGone.at - restartAt : '-'} ms after the restart`,
  )
  if (ownerAdd && otherGone)
    t.comment(
      `restart of ${owner}: hand-over ${otherGone.node} removes at +${otherGone.at - restartAt} ms, ${owner} adds at +${ownerAdd.at - restartAt} ms (gap ${ownerAdd.at - otherGone.at} ms)`,
    )
  t.comment(
    `address events after the restart: ${events.map((e) => `${e.node}${e.add ? '+' : '-'}@${e.at - restartAt}`).join(' ')}`,
  )
  t.equal(addsWhileHeld, 0, 'no node added the address while another held it')
  const final = await holders()
  t.equal(final.length, 1, `one announcer after the restart (${final.join()})`)

  // Cut the owner off from etcd (nftables in its namespace): it stops announcing when its lease runs out by its own
  // clock, before etcd expires the key and another node takes over; it keeps serving its ClusterIP meanwhile.
  const cut = final[0]!
  const admin = async (n: NodeName, path: string) =>
    (await inNs(NS[n], ['curl', '-s', '--max-time', '2', '-w', '\n%{http_code}', `http://${NODE_IP[n]}:9901${path}`]))
      .stdout
  const statusOf = async (n: NodeName) => {
    const out = await admin(n, '/status')
    return JSON.parse(out.slice(0, out.lastIndexOf('\n'))) as {
      snapshot: { services: { key: string; clusterIPs: string[] }[] }
      planes: { lease?: { held: boolean } }
    }
  }
  const clusterIp = (await statusOf(cut)).snapshot.services.find((x) => x.key === 'default/web')!.clusterIPs[0]!
  await must(['ip', 'netns', 'exec', NS[cut], 'nft', 'add table inet iso'])
  await must(['ip', 'netns', 'exec', NS[cut], 'nft', 'add chain inet iso out { type filter hook output priority 0 ; }'])
  await must([
    'ip',
    'netns',
    'exec',
    NS[cut],
    'nft',
    'add rule inet iso out ip daddr 198.18.6.1 tcp dport 23721-23723 drop',
  ])
  const cutAt = Date.now()
  cleanup.push(() => exec(['ip', 'netns', 'exec', NS[cut], 'nft', 'delete table inet iso']))
  let both = 0
  let withdrawnAt: number | null = null
  let takenAt: number | null = null
  for (let i = 0; i < 600 && (withdrawnAt === null || takenAt === null) && Date.now() - cutAt < 15000; i++) {
    const h = await holders()
    const now = Date.now()
    if (h.includes(cut) && h.length > 1) both++
    if (!h.includes(cut)) withdrawnAt ??= now
    if (h.some((n) => n !== cut)) takenAt ??= now
  }
  t.ok(withdrawnAt !== null && takenAt !== null, 'the cut-off node withdrew and another took over')
  t.comment(
    `timing cut off ${cut} from etcd → it stops announcing: ${withdrawnAt! - cutAt} ms; another node announces: ${takenAt! - cutAt} ms`,
  )
  t.ok(withdrawnAt! - cutAt <= (LEASE_SECONDS + 1) * 1000, 'stops announcing within its lease (+1 s)')
  t.ok(takenAt! - cutAt <= (LEASE_SECONDS + 2) * 1000, 'another node announces within the lease (+2 s)')
  t.equal(both, 0, 'no sample with two announcers')
  const ready = await admin(cut, '/readyz')
  t.match(ready, /^ready\ndegraded: store: /, `/readyz of the cut-off node: 200, degraded (${ready.split('\n')[1]})`)
  t.match(ready, /\n200$/)
  const viaClusterIp = await inNs(NS[cut], ['curl', '-s', '--max-time', '2', `http://${clusterIp}/`])
  t.match(hostOf(viaClusterIp.stdout), /^[abc]1$/, 'its ClusterIP still serves from the last Snapshot')

  // A change while it is cut off reaches it after the heal, from the watch.
  writeFileSync(
    join(dir, 'web2.yaml'),
    'apiVersion: v1\nkind: Service\nmetadata: { name: web2 }\nspec: { selector: { app: web }, ports: [{ port: 81, targetPort: http }] }\n',
  )
  t.equal(
    (
      await inNs(
        NS.lan,
        [
          process.execPath,
          MESHLET_BIN,
          'apply',
          '-f',
          join(dir, 'web2.yaml'),
          ...storeArgs,
          '--service-cidr',
          '198.18.7.0/24',
        ],
        30000,
      )
    ).code,
    0,
  )
  await must(['ip', 'netns', 'exec', NS[cut], 'nft', 'delete table inet iso'])
  const healAt = Date.now()
  await until(
    'the healed node sees web2 and holds its lease again',
    async () => {
      const st = await statusOf(cut)
      return st.snapshot.services.some((x) => x.key === 'default/web2') && st.planes.lease?.held === true
    },
    30000,
    50,
  )
  t.comment(`timing heal → caught up (web2 seen, lease held): ${Date.now() - healAt} ms`)
  await until('one announcer after the heal', async () => (await holders()).length === 1, 10000, 50)
  t.pass('one announcer after the heal')

  // SIGTERM of the owner: it takes the address off its interface before revoking its lease (its claim goes with
  // the lease), so the next node adds it only after; the takeover does not wait for the lease TTL.
  const stopping = (await holders())[0]!
  const mark = events.length
  const termAt = Date.now()
  await meshlets[stopping]!.stop('SIGTERM')
  const takenOver = await until(
    'another node holds the address after the SIGTERM',
    async () => ((await holders()).some((n) => n !== stopping) ? Date.now() : null),
    15000,
    20,
  )
  await new Promise((r) => setTimeout(r, 300))
  const termHeld = new Set<NodeName>([stopping])
  let termOverlap = 0
  for (const e of events.slice(mark)) {
    if (e.add) {
      if ([...termHeld].some((n) => n !== e.node)) termOverlap++
      termHeld.add(e.node)
    } else termHeld.delete(e.node)
  }
  t.comment(
    `SIGTERM of ${stopping} → another node announces: ${takenOver - termAt} ms; events ${events
      .slice(mark)
      .map((e) => `${e.node}${e.add ? '+' : '-'}@${e.at - termAt}`)
      .join(' ')}`,
  )
  t.equal(termOverlap, 0, 'SIGTERM: no node added the address while the stopping one held it')
}

t.test(
  'etcd leases: LoadBalancer owner killed → address moves within the lease TTL',
  { timeout: 180_000, skip },
  async (t) => run(t),
)
