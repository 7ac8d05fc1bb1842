// etcd mode against a real 3-member etcd cluster on loopback (ports 23701-23713) and three real `meshlet up` nodes:
// apply → every node answers the new Service in DNS within 1 s; delete → gone within 1 s; invalid objects refused
// with check's errors and nothing written; etcd stopped → each node keeps answering from its last Snapshot, degraded
// in /readyz and /status; etcd back → the watch resumes from its revision (no relist) and new objects arrive; a watch
// whose revision was compacted away relists.

import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { pino } from 'pino'
import type { IKeyValue } from 'etcd3'
import { MESHLET_BIN, startMeshlet, type MeshletProcess } from '../helpers/meshlet.ts'
import { decode, query, udpRaw } from '../dns/helpers.ts'
import { startEtcdCluster, etcdMissing } from './etcd-cluster.ts'
import { connect } from '../../store/client.ts'
import { ListWatch } from '../../store/list-watch.ts'

const PREFIX = `/t${process.pid}`
const log = pino({ level: 'silent' })

function run(args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MESHLET_BIN, ...args], { timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0
      resolve({ code, stdout, stderr })
    })
  })
}

async function addresses(node: MeshletProcess, name: string): Promise<string[] | null> {
  const reply = await udpRaw(node.dns!.port, query(name, 'A'), 500)
  if (!reply) return null
  const p = decode(reply)
  if ((p as { rcode?: string }).rcode !== 'NOERROR') return []
  return (p.answers ?? []).flatMap((a) => (a.type === 'A' ? [String(a.data)] : []))
}

/** ms until `pred` holds on every node (polled every 20 ms), or throws after `timeoutMs`. */
async function onEveryNode(
  nodes: readonly MeshletProcess[],
  what: string,
  pred: (n: MeshletProcess) => Promise<boolean>,
  timeoutMs: number,
): Promise<number[]> {
  const start = Date.now()
  return Promise.all(
    nodes.map(async (n, i) => {
      for (;;) {
        if (await pred(n).catch(() => false)) return Date.now() - start
        if (Date.now() - start > timeoutMs) throw new Error(`node ${i}: not seen in ${timeoutMs} ms: ${what}`)
        await sleep(20)
      }
    }),
  )
}

const SERVICE = (name: string) => `apiVersion: v1
kind: Service
metadata: { name: ${name} }
spec: { selector: { app: ${name} }, ports: [{ port: 80 }] }
`

t.test(
  'etcd mode: apply, delete, static stability, watch resume',
  { skip: etcdMissing() ?? false, timeout: 180_000 },
  async (t) => {
    const etcd = await startEtcdCluster(t, { basePort: 23700 })
    const dir = mkdtempSync(join(tmpdir(), 'meshlet-apply-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    const storeArgs = ['--store', etcd.url, '--etcd-prefix', PREFIX]
    const nodes = await Promise.all(
      ['n0', 'n1', 'n2'].map((name) =>
        startMeshlet(t, {
          args: [...storeArgs, '--node', name, '--http', 'off', '--https', 'off', '--vip-mode', 'none'],
        }),
      ),
    )
    const web = 'web.default.svc.cluster.local'

    // apply → every node answers within 1 s.
    writeFileSync(join(dir, 'web.yaml'), SERVICE('web'))
    const applied = await run(['apply', '-f', join(dir, 'web.yaml'), ...storeArgs])
    t.equal(applied.code, 0, `apply exits 0 (${applied.stderr})`)
    t.match(applied.stdout, `stored ${PREFIX}/objects/v1-Service/default/web`)
    const seen = await onEveryNode(
      nodes,
      'web answered',
      async (n) => ((await addresses(n, web)) ?? []).length === 1,
      5000,
    )
    t.comment(`timing apply → DNS answer on each node: ${seen.join(', ')} ms`)
    t.ok(Math.max(...seen) <= 1000, `every node answers within 1 s (${seen.join(', ')} ms)`)
    const stored = await etcd.ctl(['get', '--print-value-only', `${PREFIX}/objects/v1-Service/default/web`])
    t.match(JSON.parse(stored), { kind: 'Service', metadata: { name: 'web' } }, 'the manifest document, as JSON')

    // get --store: the stored objects built as a node builds them, with no node asked; the same rows as a node's.
    const adminOf = (n: MeshletProcess) => `${n.admin!.host}:${n.admin!.port}`
    const fromNode = await run(['get', 'svc', '-o', 'json', '--admin', adminOf(nodes[0]!)])
    const nodeRows = JSON.parse(fromNode.stdout) as { NAME: string; 'CLUSTER-IP': string }[]
    const cidr = nodeRows[0]!['CLUSTER-IP'].replace(/\.\d+\.\d+$/, '.0.0/16')
    const fromStore = await run(['get', 'svc', '-o', 'json', ...storeArgs, '--service-cidr', cidr])
    t.equal(fromStore.code, 0, `get --store exits 0 (${fromStore.stderr})`)
    t.same(JSON.parse(fromStore.stdout), nodeRows, `get svc --store gives the node's rows (${fromStore.stdout.trim()})`)
    const table = await run(['get', 'services', ...storeArgs])
    t.match(
      table.stdout,
      /^NAME\s+TYPE\s+CLUSTER-IP.*\nweb\s+ClusterIP\s+127\.96\./s,
      'a table, default --service-cidr',
    )
    const noIngress = await run(['get', 'ingresses', ...storeArgs])
    t.equal(noIngress.code, 2, 'get ingresses --store is a usage error (routes are compiled by a running node)')
    const noEtcd = await run(['get', 'svc', '--store', 'etcd://127.0.0.1:1'])
    t.equal(noEtcd.code, 1, 'get --store with no etcd exits 1')
    t.match(noEtcd.stderr, /cannot read \/meshlet from etcd/, 'named in the error (MLT_STORE_UNREACHABLE)')

    // Invalid objects: refused with check's errors, nothing written (a valid one in the same file included).
    writeFileSync(
      join(dir, 'bad.yaml'),
      SERVICE('good') +
        '---\n' +
        'apiVersion: v1\nkind: Service\nmetadata: { name: bad }\nspec: { ports: [{ port: 0 }] }\n',
    )
    const checked = await run(['check', '-f', join(dir, 'bad.yaml')])
    const refused = await run(['apply', '-f', join(dir, 'bad.yaml'), ...storeArgs])
    t.equal(refused.code, 1, 'apply of an invalid file exits 1')
    t.equal(refused.stdout, checked.stdout, "apply prints exactly check's errors")
    t.match(refused.stdout, /spec\.ports\[0\]\.port/)
    const keys = await etcd.ctl(['get', '--prefix', '--keys-only', `${PREFIX}/objects/`])
    t.same(keys.split('\n').filter(Boolean), [`${PREFIX}/objects/v1-Service/default/web`], 'nothing half-written')

    // delete → gone within 1 s.
    const deleted = await run(['delete', '-f', join(dir, 'web.yaml'), ...storeArgs])
    t.equal(deleted.code, 0, `delete exits 0 (${deleted.stderr})`)
    t.match(deleted.stdout, `deleted ${PREFIX}/objects/v1-Service/default/web`)
    const gone = await onEveryNode(nodes, 'web gone', async (n) => (await addresses(n, web))?.length === 0, 5000)
    t.comment(`timing delete → NXDOMAIN on each node: ${gone.join(', ')} ms`)
    t.ok(Math.max(...gone) <= 1000, `gone on every node within 1 s (${gone.join(', ')} ms)`)

    // Static stability: etcd stopped → last Snapshot served, degraded shown.
    writeFileSync(join(dir, 'api.yaml'), SERVICE('api'))
    t.equal((await run(['apply', '-f', join(dir, 'api.yaml'), ...storeArgs])).code, 0)
    const api = 'api.default.svc.cluster.local'
    await onEveryNode(nodes, 'api answered', async (n) => ((await addresses(n, api)) ?? []).length === 1, 5000)
    const revisionBefore = (await nodes[0]!.status()).planes.store!
    for (const i of [0, 1, 2]) await etcd.stop(i)
    await onEveryNode(
      nodes,
      'store disconnected',
      async (n) => (await n.status()).planes.store?.connected === false,
      15_000,
    )
    for (const n of nodes) {
      const res = await fetch(`http://${n.admin!.host}:${n.admin!.port}/readyz`)
      const body = await res.text()
      t.equal(res.status, 200, '/readyz stays 200: the node serves')
      t.match(body, /^ready\ndegraded: store: etcd unreachable since /, '/readyz says degraded')
      t.same(((await addresses(n, api)) ?? []).length, 1, 'DNS still answers from the last Snapshot')
    }
    const down = await run(['apply', '-f', join(dir, 'web.yaml'), ...storeArgs])
    t.equal(down.code, 1, 'apply with etcd down exits 1')
    t.match(down.stderr, /nothing was written/)

    // etcd back → the watch resumes from its revision (no relist) and new objects arrive within 1 s.
    for (const i of [0, 1, 2]) void etcd.start(i)
    await etcd.start(2)
    await onEveryNode(
      nodes,
      'store connected',
      async (n) => (await n.status()).planes.store?.connected === true,
      20_000,
    )
    for (const n of nodes) {
      const st = (await n.status()).planes.store!
      t.equal(st.relists, 0, 'resumed from the watch revision, not relisted')
      t.ok(BigInt(st.revision) >= BigInt(revisionBefore.revision), 'revision kept')
    }
    writeFileSync(join(dir, 'web2.yaml'), SERVICE('web2'))
    t.equal((await run(['apply', '-f', join(dir, 'web2.yaml'), ...storeArgs])).code, 0)
    const after = await onEveryNode(
      nodes,
      'web2 answered',
      async (n) => ((await addresses(n, 'web2.default.svc.cluster.local')) ?? []).length === 1,
      5000,
    )
    t.comment(`timing apply after etcd restart → DNS answer: ${after.join(', ')} ms`)
    t.ok(Math.max(...after) <= 1000, `every node answers within 1 s after the restart (${after.join(', ')} ms)`)

    // A watch whose next revision was compacted away relists and ends with etcd's present state.
    const client = connect({ endpoints: [etcd.endpoints[0]!], prefix: PREFIX, cacert: null, cert: null, key: null })
    const writer = connect({ endpoints: etcd.endpoints.slice(1), prefix: PREFIX, cacert: null, cert: null, key: null })
    t.teardown(() => (client.close(), writer.close()))
    const known = new Map<string, string>()
    const keyOf = (kv: IKeyValue) => kv.key.toString().slice(`${PREFIX}/c/`.length)
    const lw = new ListWatch(
      client,
      `${PREFIX}/c/`,
      {
        reset: (kvs) => {
          known.clear()
          for (const kv of kvs) known.set(keyOf(kv), kv.value.toString())
        },
        put: (kv) => known.set(keyOf(kv), kv.value.toString()),
        delete: (kv) => known.delete(keyOf(kv)),
        connection: () => {},
      },
      log,
    )
    t.teardown(() => lw.close())
    await writer.put(`${PREFIX}/c/a`).value('1')
    await lw.start()
    await writer.put(`${PREFIX}/c/b`).value('2')
    for (let i = 0; i < 100 && known.size < 2; i++) await sleep(20)
    t.same(Object.fromEntries(known), { a: '1', b: '2' }, 'listed and watched')
    await etcd.stop(0)
    await writer.put(`${PREFIX}/c/c`).value('3')
    await writer.delete().key(`${PREFIX}/c/a`)
    const rev = (await writer.put(`${PREFIX}/c/d`).value('4').exec()).header.revision
    await etcd.ctl(['compact', rev, '--physical'], 1)
    await etcd.start(0)
    for (let i = 0; i < 500 && lw.relists === 0; i++) await sleep(20)
    for (let i = 0; i < 100 && known.size !== 3; i++) await sleep(20)
    t.ok(lw.relists >= 1, 'the compacted watch relisted')
    t.same(Object.fromEntries(known), { b: '2', c: '3', d: '4' }, "etcd's present state after the relist")
  },
)
