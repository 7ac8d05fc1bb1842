// ClusterIP allocation by compare-and-swap (store/alloc.ts) against a real 3-member etcd cluster on loopback (ports
// 23761-23773) and two real `meshlet up` nodes: 50 writers racing on their own connections into a 62-address CIDR →
// 50 distinct addresses, each recorded once; two writers racing for a one-address CIDR, 50 rounds → exactly one wins
// each time; both nodes serve what etcd recorded; delete frees; every node stopped and restarted → the same addresses.

import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { MESHLET_BIN, startMeshlet, type MeshletProcess } from '../helpers/meshlet.ts'
import { startEtcdCluster, etcdMissing } from './etcd-cluster.ts'
import { connect } from '../../store/client.ts'
import { applyWithClaims, deleteWithClaims } from '../../store/alloc.ts'
import { StoreError } from '../../store/errors.ts'
import { parseCidr } from '../../model/ip.ts'

const PREFIX = `/a${process.pid}`
const CIDR = '127.97.0.0/26'

function run(args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MESHLET_BIN, ...args], { timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0
      resolve({ code, stdout, stderr })
    })
  })
}

const doc = (name: string, type = 'ClusterIP') =>
  JSON.stringify({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name },
    spec: { type, selector: { app: name }, ports: [{ port: 80 }] },
  })
const keyOf = (name: string) => `${PREFIX}/objects/v1-Service/default/${name}`
const names = Array.from({ length: 50 }, (_, i) => `svc-${String(i).padStart(3, '0')}`)

t.test(
  'etcd mode: ClusterIPs allocated by compare-and-swap',
  { skip: etcdMissing() ?? false, timeout: 240_000 },
  async (t) => {
    const etcd = await startEtcdCluster(t, { basePort: 23760 })
    const opts = (i: number) => ({
      endpoints: [etcd.endpoints[i % 3]!],
      prefix: PREFIX,
      cacert: null,
      cert: null,
      key: null,
    })
    const cidr = parseCidr(CIDR)!

    // 50 writers at once, each on its own connection (spread over the three members), into 62 addresses: hash
    // probes collide, and a collision is settled by the create-if-absent compare, never by two winners.
    const clients = names.map((_, i) => connect(opts(i)))
    t.teardown(() => clients.forEach((c) => c.close()))
    const results = await Promise.all(
      names.map((n, i) => applyWithClaims(clients[i]!, PREFIX, new Map([[keyOf(n), doc(n, 'NodePort')]]), [cidr])),
    )
    const given = results.map((r, i) => r.clusterIPs.get(keyOf(names[i]!))?.[0] ?? '')
    t.equal(new Set(given).size, 50, `50 distinct ClusterIPs (${given.join(' ')})`)
    const attempts = results.map((r) => r.attempts)
    t.comment(
      `transactions per writer: max ${Math.max(...attempts)}, ${attempts.filter((a) => a > 1).length} writers retried`,
    )
    t.ok(
      given.every(
        (ip) => /^127\.97\.0\.(\d+)$/.test(ip) && Number(ip.split('.')[3]) >= 1 && Number(ip.split('.')[3]) <= 62,
      ),
      'all in the CIDR, no network or broadcast address',
    )
    const recorded = (await etcd.ctl(['get', '--prefix', `${PREFIX}/alloc/clusterip/`])).split('\n').filter(Boolean)
    const claims = new Map<string, string>()
    for (let i = 0; i + 1 < recorded.length; i += 2)
      claims.set(recorded[i]!.slice(`${PREFIX}/alloc/clusterip/`.length), recorded[i + 1]!)
    const portClaims = (await etcd.ctl(['get', '--prefix', `${PREFIX}/alloc/nodeport/`])).split('\n').filter(Boolean)
    t.equal(claims.size, 50, 'one claim per address')
    t.ok(
      names.every((n, i) => claims.get(given[i]!) === keyOf(n)),
      'each claim names the Service its address was written into',
    )
    const nodePorts: number[] = []
    for (const [i, n] of names.entries()) {
      const stored = JSON.parse(await etcd.ctl(['get', '--print-value-only', keyOf(n)])) as {
        spec: { clusterIP: string; clusterIPs: string[]; ports: { nodePort: number }[] }
      }
      const port = stored.spec.ports[0]!.nodePort
      nodePorts.push(port)
      const owner = portClaims[portClaims.indexOf(`${PREFIX}/alloc/nodeport/${port}`) + 1]
      if (stored.spec.clusterIP !== given[i] || stored.spec.clusterIPs.join() !== given[i] || owner !== keyOf(n)) {
        t.fail(`${n}: stored ${JSON.stringify(stored.spec)}, allocated ${given[i]}, port claimed by ${owner}`)
        break
      }
    }
    t.equal(new Set(nodePorts).size, 50, '50 distinct NodePorts, written into the Services')
    t.equal(portClaims.length, 100, 'one claim per node port')
    t.ok(
      nodePorts.every((p) => p >= 30000 && p <= 32767),
      'node ports in 30000-32767',
    )

    // Two writers, one address (an IPv6 /127), 50 rounds: exactly one wins each round; the loser writes nothing.
    const one = parseCidr('fd00:97::/127')!
    let rounds = 0
    for (let r = 0; r < 50; r++) {
      const pair = [`race-${r}-a`, `race-${r}-b`]
      const outcome = await Promise.allSettled(
        pair.map((n, i) => applyWithClaims(clients[i]!, PREFIX, new Map([[keyOf(n), doc(n)]]), [one])),
      )
      const won = outcome.flatMap((o, i) => (o.status === 'fulfilled' ? [pair[i]!] : []))
      const lost = outcome.flatMap((o) =>
        o.status === 'rejected' && o.reason instanceof StoreError && o.reason.code === 'MLT_STORE_ALLOCATION'
          ? [o.reason]
          : [],
      )
      const loserStored = await etcd.ctl(['get', '--keys-only', keyOf(pair.find((n) => n !== won[0])!)])
      if (won.length !== 1 || lost.length !== 1 || loserStored.trim() !== '') {
        t.fail(`round ${r}: ${won.length} won, ${lost.length} refused, loser stored: ${loserStored.trim() || 'no'}`)
        break
      }
      await deleteWithClaims(clients[0]!, PREFIX, [keyOf(won[0]!)])
      rounds++
    }
    t.equal(rounds, 50, '50 rounds: exactly one of two racing writers got the last address, the other wrote nothing')
    t.equal(
      (await etcd.ctl(['get', '--prefix', '--keys-only', `${PREFIX}/alloc/clusterip/fd00`])).trim(),
      '',
      'every winner freed its address on delete',
    )

    // Two nodes serve what etcd recorded.
    const storeArgs = ['--store', etcd.url, '--etcd-prefix', PREFIX]
    const up = (name: string) =>
      startMeshlet(t, {
        args: [
          ...storeArgs,
          '--node',
          name,
          '--service-cidr',
          CIDR,
          '--http',
          'off',
          '--https',
          'off',
          '--vip-mode',
          'none',
        ],
      })
    const rows = async (n: MeshletProcess, count: number): Promise<Map<string, string>> => {
      for (let i = 0; i < 150; i++) {
        const got = await run(['get', 'svc', '-o', 'json', '--admin', `${n.admin!.host}:${n.admin!.port}`])
        type Row = { NAME: string; 'CLUSTER-IP': string; 'PORT(S)': string }
        const list = got.code === 0 ? (JSON.parse(got.stdout) as Row[]) : []
        if (list.length === count)
          return new Map(list.map((row) => [row.NAME, `${row['CLUSTER-IP']} ${row['PORT(S)']}`]))
        await sleep(200)
      }
      throw new Error(`node did not list ${count} Services`)
    }
    let nodes = await Promise.all(['n0', 'n1'].map(up))
    const expected = new Map(names.map((n, i) => [n, `${given[i]!} 80:${nodePorts[i]!}/TCP`]))
    const seen = await Promise.all(nodes.map((n) => rows(n, 50)))
    t.same(
      Object.fromEntries(seen[0]!),
      Object.fromEntries(expected),
      'node n0 serves the recorded ClusterIPs and NodePorts',
    )
    t.same(Object.fromEntries(seen[1]!), Object.fromEntries(expected), 'node n1 agrees')

    // `meshlet apply` and `meshlet delete`: apply prints the address, re-apply keeps it, delete frees the claims.
    const dir = mkdtempSync(join(tmpdir(), 'meshlet-alloc-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    const yaml = (list: readonly string[], type = 'NodePort') =>
      list
        .map(
          (n) =>
            `apiVersion: v1\nkind: Service\nmetadata: { name: ${n} }\nspec: { type: ${type}, selector: { app: ${n} }, ports: [{ port: 80 }] }\n`,
        )
        .join('---\n')
    writeFileSync(join(dir, 'extra.yaml'), yaml(['extra']))
    const first = await run(['apply', '-f', join(dir, 'extra.yaml'), ...storeArgs, '--service-cidr', CIDR])
    t.equal(first.code, 0, `apply exits 0 (${first.stderr})`)
    const extraIp = /clusterIPs=(\S+)/.exec(first.stdout)?.[1] ?? ''
    t.ok(
      !given.includes(extraIp) && extraIp.startsWith('127.97.0.'),
      `apply prints a free address (${first.stdout.trim()})`,
    )
    const extraDoc = await etcd.ctl(['get', '--print-value-only', keyOf('extra')])
    const again = await run(['apply', '-f', join(dir, 'extra.yaml'), ...storeArgs, '--service-cidr', CIDR])
    t.match(again.stdout, `clusterIPs=${extraIp}`, 're-apply keeps the address')
    t.equal(await etcd.ctl(['get', '--print-value-only', keyOf('extra')]), extraDoc, 'and the node port')
    const extraPort = (JSON.parse(extraDoc) as { spec: { ports: { nodePort: number }[] } }).spec.ports[0]!.nodePort
    // An address or port a manifest writes that another Service holds is refused; nothing is written.
    writeFileSync(
      join(dir, 'taken.yaml'),
      `apiVersion: v1\nkind: Service\nmetadata: { name: taken }\nspec: { clusterIP: ${given[20]!}, ports: [{ port: 80 }] }\n`,
    )
    const taken = await run(['apply', '-f', join(dir, 'taken.yaml'), ...storeArgs, '--service-cidr', CIDR])
    t.equal(taken.code, 1, 'apply of a ClusterIP another Service holds exits 1')
    t.match(taken.stderr, `${given[20]!} is already allocated to ${keyOf(names[20]!)}`, 'naming the holder')
    t.equal((await etcd.ctl(['get', '--keys-only', keyOf('taken')])).trim(), '', 'nothing written')
    const gone = names.slice(0, 10)
    writeFileSync(join(dir, 'gone.yaml'), yaml(gone))
    const deleted = await run(['delete', '-f', join(dir, 'gone.yaml'), ...storeArgs])
    t.equal(deleted.code, 0, `delete exits 0 (${deleted.stderr})`)
    const left = (await etcd.ctl(['get', '--prefix', '--keys-only', `${PREFIX}/alloc/clusterip/127.`]))
      .split('\n')
      .filter(Boolean)
    t.equal(left.length, 41, 'the deleted Services freed their 10 addresses (40 + extra left)')
    const leftPorts = (await etcd.ctl(['get', '--prefix', '--keys-only', `${PREFIX}/alloc/nodeport/`]))
      .split('\n')
      .filter(Boolean)
    t.equal(leftPorts.length, 41, 'and their 10 node ports')

    // Every node stopped, then started again: the same addresses as before.
    const before = new Map([...expected].filter(([n]) => !gone.includes(n)))
    before.set('extra', `${extraIp} 80:${extraPort}/TCP`)
    await Promise.all(nodes.map((n) => n.stop()))
    nodes = await Promise.all(['n0', 'n1'].map(up))
    const restarted = await Promise.all(nodes.map((n) => rows(n, 41)))
    t.same(
      Object.fromEntries(restarted[0]!),
      Object.fromEntries(before),
      'after a restart of every node: the same addresses',
    )
    t.same(Object.fromEntries(restarted[1]!), Object.fromEntries(before), 'and both nodes agree')
  },
)
