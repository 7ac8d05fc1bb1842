// --dns-workers: each Snapshot reaches the workers as what changed (dns/zone-delta.ts), not the whole state. With
// 300 Services, flipping one Service's address sends that one ServiceState (a small fraction of the first, full
// message) and both workers answer the new address. dig and raw UDP from new sockets (the kernel spreads them).

import t from 'tap'
import { adata, decode, dig, eventually, query, startPlane, udpRaw } from './helpers.ts'

const Z = 'cluster.local'
const N = 300

interface Update {
  full: boolean
  services: number
  pods: number
  bytes: number
}
interface WorkerStatus {
  worker: number
  queries: number
  snapshotVersion: number
  update: Update | null
}

function yaml(flipIp: string): string {
  const docs = [
    `apiVersion: v1\nkind: Service\nmetadata: { name: flip, namespace: default }\nspec:\n  clusterIP: ${flipIp}\n  ports: [{ name: http, port: 80 }]\n`,
  ]
  for (let i = 0; i < N; i++)
    docs.push(
      `apiVersion: v1\nkind: Service\nmetadata: { name: svc-${i}, namespace: ns-${i % 10} }\nspec:\n  selector: { app: a${i} }\n  ports: [{ name: http, port: 80 }]\n`,
    )
  return docs.join('---\n')
}

t.test('a flip with two workers: only the changed Service travels, both workers answer it', async (t) => {
  const dns = await startPlane(t, { workers: 2, yaml: yaml('127.96.7.1') })
  const workers = () => (dns.plane.status() as { workers: WorkerStatus[] }).workers
  const first = workers().map((w) => w.update!)
  t.ok(
    first.every((u) => u.full && u.services === N + 1),
    `the first message to each worker is the full state (${JSON.stringify(first)})`,
  )
  t.equal((await dig(dns.port, `flip.default.svc.${Z}`, 'A')).answer[0]?.data, '127.96.7.1')

  const before = workers().map((w) => w.queries)
  await dns.setYaml(yaml('127.96.7.2'))
  const after = workers().map((w) => w.update!)
  t.ok(
    after.every((u) => !u.full && u.services === 1 && u.pods === 0),
    `then one changed ServiceState each (${JSON.stringify(after)})`,
  )
  const fullBytes = first[0]!.bytes
  t.ok(
    after.every((u) => u.bytes * 50 < fullBytes),
    `the delta is O(changed): ${after[0]!.bytes} bytes against ${fullBytes} for the full state`,
  )
  // New sockets (new source ports): the kernel spreads the queries over both workers; every one sees the flip.
  const replies = await Promise.all(
    Array.from({ length: 60 }, () => udpRaw(dns.port, query(`flip.default.svc.${Z}`, 'A'), 4000)),
  )
  const addresses = replies.map((r) => {
    const a = r ? decode(r).answers?.[0] : undefined
    return a ? adata(a) : 'none'
  })
  t.same([...new Set(addresses)], ['127.96.7.2'], 'every answer has the new address')
  const served = workers().map((w, i) => w.queries - before[i]!)
  t.ok(
    served.every((n) => n > 0),
    `both workers answered (${served.join(', ')})`,
  )
  // Unchanged names still answer from both (the delta kept what it did not carry).
  t.ok(
    await eventually(async () => {
      const rs = await Promise.all(
        Array.from({ length: 20 }, () => udpRaw(dns.port, query(`svc-7.ns-7.svc.${Z}`, 'A'), 2000)),
      )
      return rs.every((r) => r && decode(r).answers?.length === 1)
    }, 5000),
    'an unchanged Service from every worker',
  )
})
