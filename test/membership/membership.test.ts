// membership/: two nodes, each a Store with its membership plane and a real admin server on loopback. Node a probes
// node b's /healthz (and b probes a); stopping b's admin server makes a see b dead within ~4 s (3 failed probes 1 s
// apart), which takes b out of the LoadBalancer election; restarting it brings b back after one good probe.

import t from 'tap'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { setTimeout as sleep } from 'node:timers/promises'
import { Store } from '../../model/store.ts'
import type { Snapshot } from '../../model/snapshot.ts'
import { noopReporter } from '../../model/snapshot.ts'
import { loadManifestText } from '../../config/load.ts'
import { AdminServer } from '../../admin/server.ts'
import { startMembership, peerTarget, type MembershipPlane } from '../../membership/index.ts'
import { candidates, electedNode } from '../../lb/l2-election.ts'
import { testRuntimeOptions } from '../helpers/options.ts'

const log = pino({ level: 'silent' })

async function until<T>(what: string, fn: () => T | null | undefined | false, timeoutMs: number): Promise<T> {
  const end = Date.now() + timeoutMs
  for (;;) {
    const v = fn()
    if (v) return v
    if (Date.now() > end) throw new Error(`not seen in ${timeoutMs} ms: ${what}`)
    await sleep(25)
  }
}

function manifests(ports: { a: number; b: number }, extra = ''): string {
  const node = (name: string, port: number) => `apiVersion: v1
kind: Node
metadata: { name: ${name}, annotations: { meshlet.io/admin-port: "${port}" } }
status: { addresses: [{ type: InternalIP, address: 127.0.0.1 }] }
---
`
  return (
    node('a', ports.a) +
    node('b', ports.b) +
    `apiVersion: v1
kind: Pod
metadata: { name: web-a, labels: { app: web } }
spec: { nodeName: a, containers: [{ name: c, image: x, ports: [{ containerPort: 80 }] }] }
status: { podIP: 127.0.0.10 }
---
apiVersion: v1
kind: Pod
metadata: { name: web-b, labels: { app: web } }
spec: { nodeName: b, containers: [{ name: c, image: x, ports: [{ containerPort: 80 }] }] }
status: { podIP: 127.0.0.11 }
---
apiVersion: v1
kind: Service
metadata: { name: web }
spec: { type: LoadBalancer, selector: { app: web }, ports: [{ port: 80 }] }
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: { name: p, namespace: metallb-system }
spec: { addresses: [198.18.200.0/28] }
${extra}`
  )
}

interface TestNode {
  name: string
  store: Store
  admin: AdminServer
  port: number
  plane: MembershipPlane
}

async function listenAdmin(
  store: Store,
  name: string,
  port: number,
  planes: () => MembershipPlane[],
): Promise<{ admin: AdminServer; port: number }> {
  const admin = new AdminServer(
    {
      store,
      planes,
      config: () => ({}),
      metrics: new Registry(),
      startedAt: Date.now(),
      version: 'test',
      nodeName: name,
    },
    log,
  )
  // A restart reuses the port it had; another process may hold it for a moment in between.
  for (let attempt = 0; ; attempt++) {
    try {
      const info = await admin.listen({ host: '127.0.0.1', port })
      return { admin, port: info.port }
    } catch (err) {
      if (attempt > 50) throw err
      await sleep(100)
    }
  }
}

t.test(
  'two nodes see each other, a stopped node goes dead within ~4 s and comes back',
  { timeout: 40_000 },
  async (t) => {
    const nodes: TestNode[] = []
    t.teardown(async () => {
      for (const n of nodes) {
        await n.plane.close()
        await n.admin.close()
      }
    })
    // Admin servers first (each needs its port in the other's Node annotation), then stores and planes.
    const stores = {
      a: new Store({ nodeName: 'a', serviceCidrs: [] }),
      b: new Store({ nodeName: 'b', serviceCidrs: [] }),
    }
    const planeOf: Record<string, MembershipPlane[]> = { a: [], b: [] }
    const admins = {
      a: await listenAdmin(stores.a, 'a', 0, () => planeOf.a!),
      b: await listenAdmin(stores.b, 'b', 0, () => planeOf.b!),
    }
    const loaded = loadManifestText(manifests({ a: admins.a.port, b: admins.b.port }), 'two-nodes.yaml')
    t.same(loaded.errors, [], 'manifests valid')
    for (const name of ['a', 'b'] as const) {
      const store = stores[name]
      store.setObjects(loaded.objects, [])
      const plane = (await startMembership({
        store,
        options: testRuntimeOptions({ nodeName: name }),
        log,
        metrics: new Registry(),
        reporter: noopReporter,
      })) as MembershipPlane
      planeOf[name]!.push(plane)
      nodes.push({ name, store, admin: admins[name].admin, port: admins[name].port, plane })
    }
    const a = nodes[0]!
    const b = nodes[1]!
    const live = (n: TestNode, peer: string) => (n.store.current as Snapshot | null)?.nodeLiveness[peer]
    await until('a sees b alive, b sees a alive', () => live(a, 'b') === true && live(b, 'a') === true, 5000)
    t.same(a.store.current!.nodeLiveness, { b: true }, 'a knows only b (never itself)')
    t.ok(a.plane.ready(), 'ready')
    const st = a.plane.status() as { peers: { node: string; state: string; url: string }[] }
    t.same(
      st.peers.map((p) => [p.node, p.state, p.url]),
      [['b', 'alive', `http://127.0.0.1:${b.port}/healthz`]],
    )

    const svc = a.store.current!.services.find((s) => s.key === 'default/web')!
    const ip = svc.loadBalancerIPs[0]!
    t.ok(ip, 'LoadBalancer address allocated')
    t.same(candidates(a.store.current!).sort(), ['a', 'b'], 'both nodes are candidates while alive')
    const electedBoth = electedNode(a.store.current!, svc, ip)
    t.equal(
      electedNode(
        b.store.current!,
        b.store.current!.services.find((s) => s.key === 'default/web')!,
        ip,
      ),
      electedBoth,
      'both nodes elect the same node',
    )

    // Stop b's admin server: a sees b dead after 3 failed probes.
    await b.admin.close()
    const stoppedAt = Date.now()
    await until('a sees b dead', () => live(a, 'b') === false, 8000)
    const deadAfter = Date.now() - stoppedAt
    t.comment(`timing b stopped → dead on a: ${deadAfter} ms`)
    t.ok(deadAfter <= 5000, `dead within ~4 s (${deadAfter} ms)`)
    t.ok(deadAfter >= 1500, `not before 3 failures (${deadAfter} ms)`)
    t.same(candidates(a.store.current!), ['a'], 'b is no longer a candidate on a')
    t.equal(
      electedNode(
        a.store.current!,
        a.store.current!.services.find((s) => s.key === 'default/web')!,
        ip,
      ),
      'a',
      'a announces now',
    )
    const st2 = a.plane.status() as {
      peers: { state: string; lastError: string | null; consecutiveFailures: number }[]
    }
    t.equal(st2.peers[0]!.state, 'dead')
    t.match(st2.peers[0]!.lastError, /ECONNREFUSED/)

    // Restart b's admin server on the same port: one good probe brings it back.
    const restarted = await listenAdmin(b.store, 'b', b.port, () => planeOf.b!)
    b.admin = restarted.admin
    const restartedAt = Date.now()
    await until('a sees b alive again', () => live(a, 'b') === true, 5000)
    t.comment(`timing b restarted → alive on a: ${Date.now() - restartedAt} ms`)
    t.same(candidates(a.store.current!).sort(), ['a', 'b'])
    t.equal(
      electedNode(
        a.store.current!,
        a.store.current!.services.find((s) => s.key === 'default/web')!,
        ip,
      ),
      electedBoth,
      'the election is back to where it was',
    )
  },
)

t.test(
  'a Node removed from the manifests is forgotten (counts as alive), a Node without InternalIP is not probed',
  async (t) => {
    const store = new Store({ nodeName: 'a', serviceCidrs: [] })
    // Port 1 on loopback: nothing listens, every probe is refused at once.
    const text = `apiVersion: v1
kind: Node
metadata: { name: z, annotations: { meshlet.io/admin-port: "1" } }
status: { addresses: [{ type: InternalIP, address: 127.0.0.1 }] }
---
apiVersion: v1
kind: Node
metadata: { name: y }
`
    const loaded = loadManifestText(text, 'nodes.yaml')
    t.same(loaded.errors, [])
    store.setObjects(loaded.objects, [])
    const plane = (await startMembership({
      store,
      options: testRuntimeOptions({ nodeName: 'a' }),
      log,
      metrics: new Registry(),
      reporter: noopReporter,
    })) as MembershipPlane
    t.teardown(() => plane.close())
    await until('z dead', () => store.current?.nodeLiveness['z'] === false, 8000)
    t.same(store.current!.nodeLiveness, { z: false }, 'y (no InternalIP) is never probed')
    t.same(candidates(store.current!).sort(), ['a', 'y'])
    store.setObjects(
      loaded.objects.filter((o) => o.meta.name !== 'z'),
      [],
    )
    await until(
      'z forgotten',
      () => store.current !== null && !('z' in store.current.nodeLiveness) && store.current.nodes.length === 1,
      3000,
    )
    t.same((plane.status() as { peers: unknown[] }).peers, [])
  },
)

t.test('Ready condition and admin-port annotation', async (t) => {
  const text = `apiVersion: v1
kind: Node
metadata: { name: down }
status: { conditions: [{ type: MemoryPressure, status: "False" }, { type: Ready, status: "False" }] }
---
apiVersion: v1
kind: Node
metadata: { name: up, annotations: { meshlet.io/admin-port: "9000" } }
status: { conditions: [{ type: Ready, status: "True" }], addresses: [{ type: InternalIP, address: 198.18.0.5 }] }
---
apiVersion: v1
kind: Node
metadata: { name: unknown, annotations: { meshlet.io/admin-port: "http" } }
status: { conditions: [{ type: Ready, status: Unknown }], addresses: [{ type: InternalIP, address: 198.18.0.6 }] }
`
  const loaded = loadManifestText(text, 'nodes.yaml')
  t.same(loaded.errors, [])
  const byName = Object.fromEntries(loaded.objects.map((o) => [o.meta.name, o]))
  t.equal((byName['down'] as { ready: boolean | null }).ready, false)
  t.equal((byName['up'] as { ready: boolean | null }).ready, true)
  t.equal((byName['unknown'] as { ready: boolean | null }).ready, null)
  const bad = loadManifestText(
    'apiVersion: v1\nkind: Node\nmetadata: { name: x }\nstatus: { conditions: [{ type: Ready, status: Maybe }] }\n',
    'bad.yaml',
  )
  t.match(
    bad.errors.map((e) => e.path),
    ['status.conditions[0].status'],
    'a Ready status other than True/False/Unknown is an error',
  )

  const store = new Store({ nodeName: 'self', serviceCidrs: [] })
  store.setObjects(loaded.objects, [])
  const snap = store.flush()!
  t.same(candidates(snap).sort(), ['self', 'unknown', 'up'], 'Ready False is not a candidate; Unknown is')
  const up = peerTarget(byName['up'] as never, 9901)
  t.same(up, { target: { node: 'up', address: '198.18.0.5', port: 9000 }, warning: null })
  const unk = peerTarget(byName['unknown'] as never, 9901)
  t.same(unk.target, { node: 'unknown', address: '198.18.0.6', port: 9901 })
  t.match(unk.warning, /not a port/)
  t.same(peerTarget(byName['down'] as never, 9901), { target: null, warning: null })
  store.setNodeAlive('up', false)
  t.same(candidates(store.flush()!).sort(), ['self', 'unknown'], 'a dead node is not a candidate')
  store.setNodeAlive('up', null)
  t.same(candidates(store.flush()!).sort(), ['self', 'unknown', 'up'], 'forgotten = alive')
  store.setNodeAlive('self', false)
  t.same(store.flush()!.nodeLiveness, {}, 'self never appears in nodeLiveness')
})
