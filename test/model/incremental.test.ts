// Incremental state (issue 14): random sequences of changes (Services added, edited, removed; slices moved; Pods
// flipping readiness; ejections; namespaces appearing and going; ExternalName and headless Services; a whole file
// parsed again) applied step by step must give what a full rebuild gives: the same Snapshot content, the same zone
// (every name, every compiled answer) and the same fast-path replies. Unchanged per-Service objects must be shared
// between Snapshots, and `changes` must name exactly what changed.

import t from 'tap'
import dnsPacket from 'dns-packet'
import { loadManifestText } from '../../config/load.ts'
import { buildSnapshot, type AllocationState } from '../../model/build-snapshot.ts'
import { parseCidr } from '../../model/ip.ts'
import type { KubeObject } from '../../model/objects.ts'
import type { PodHealth, Snapshot } from '../../model/snapshot.ts'
import { ZoneIndex, buildZone, type Zone, type ZoneOptions } from '../../dns/zone.ts'
import { FastPath } from '../../dns/fast.ts'
import { countIndex } from '../../dns/answer.ts'

const OPTIONS = { nodeName: 'n1', serviceCidrs: [parseCidr('10.96.0.0/16')!, parseCidr('fd00:96::/112')!] }
const ZONE: ZoneOptions = { zone: 'cluster.local', ttl: 5, pods: 'verified', serverAddresses: ['127.0.0.1'] }

/** Deterministic PRNG (mulberry32) so a failure names a seed that reproduces it. */
function rng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = Math.imul(a ^ (a >>> 15), 1 | a)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

interface SvcSpec {
  ns: string
  kind: 'slices' | 'selector' | 'headless' | 'external'
  ips: string[]
  port: number
  gen: number
}

interface World {
  services: Map<string, SvcSpec>
  pods: Map<string, { ns: string; app: string; ip: string; probe: boolean }>
}

function yamlOf(name: string, s: SvcSpec): string {
  const meta = `metadata: { name: ${name}, namespace: ${s.ns} }`
  const ports = `ports: [{ name: http, port: ${s.port}, targetPort: 8080 }]`
  switch (s.kind) {
    case 'external':
      return `apiVersion: v1\nkind: Service\n${meta}\nspec: { type: ExternalName, externalName: t${s.gen}.example.com }\n`
    case 'selector':
      return `apiVersion: v1\nkind: Service\n${meta}\nspec: { selector: { app: ${name} }, ${ports} }\n`
    case 'headless':
    case 'slices': {
      const head = s.kind === 'headless' ? 'clusterIP: None, ' : ''
      const eps = s.ips.map((ip, i) => `{ addresses: [${ip}], conditions: { ready: ${(i + s.gen) % 3 !== 0} } }`)
      return (
        `apiVersion: v1\nkind: Service\n${meta}\nspec: { ${head}${ports} }\n---\n` +
        `apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: { name: ${name}-1, namespace: ${s.ns}, ` +
        `labels: { kubernetes.io/service-name: ${name} } }\naddressType: IPv4\n` +
        `ports: [{ name: http, port: 8080 }]\nendpoints: [${eps.join(', ')}]\n`
      )
    }
  }
}

function podYaml(name: string, p: { ns: string; app: string; ip: string; probe: boolean }): string {
  const probe = p.probe ? ', readinessProbe: { tcpSocket: { port: 8080 } }' : ''
  return (
    `apiVersion: v1\nkind: Pod\nmetadata: { name: ${name}, namespace: ${p.ns}, labels: { app: ${p.app} } }\n` +
    `spec: { containers: [{ name: c, ports: [{ containerPort: 8080 }]${probe} }] }\nstatus: { podIP: ${p.ip} }\n`
  )
}

function objectsOf(w: World): KubeObject[] {
  const docs: string[] = []
  for (const [name, s] of w.services) docs.push(yamlOf(name, s))
  for (const [name, p] of w.pods) docs.push(podYaml(name, p))
  const loaded = loadManifestText(docs.join('---\n'), 'world.yaml')
  if (loaded.errors.length > 0) throw new Error(JSON.stringify(loaded.errors[0]))
  return loaded.objects
}

/** Zone content as plain data: every name with every compiled RRset. */
function zoneData(z: Zone): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [key, e] of z.names) {
    const sets: Record<number, unknown> = {}
    for (const [type, set] of e.sets) {
      sets[type] = {
        answer: set.answer.toString('hex'),
        additional: set.additional.toString('hex'),
        ends: [...set.ends],
        arCount: set.arCount,
        shuffle: set.shuffle,
      }
    }
    out[Buffer.from(key, 'latin1').toString('hex')] = { wireLen: e.wireLen, cname: e.cname, reverse: e.reverse, sets }
  }
  return out
}

const QTYPES = ['A', 'AAAA', 'SRV', 'PTR', 'CNAME', 'TXT', 'SOA', 'NS', 'MX'] as const

function wireToText(key: string): string {
  const b = Buffer.from(key, 'latin1')
  const labels: string[] = []
  for (let p = 0; b[p]! !== 0; p += 1 + b[p]!) labels.push(b.toString('latin1', p + 1, p + 1 + b[p]!))
  return labels.join('.')
}

/** Decoded fast-path replies for every name and type, answers sorted (A/AAAA are shuffled). */
function fastReplies(fast: FastPath, names: readonly string[]): string[] {
  const out: string[] = []
  for (const name of names) {
    for (const type of QTYPES) {
      const msg = dnsPacket.encode({ type: 'query', id: 7, flags: 0, questions: [{ type, name }] })
      const r = fast.answer(msg, true)
      if (r === null) {
        out.push(`${name} ${type} -`)
        continue
      }
      const p = dnsPacket.decode(r)
      const rrs = (xs: dnsPacket.Answer[] | undefined) => (xs ?? []).map((a) => JSON.stringify(a)).sort()
      out.push(`${name} ${type} ${(p as { rcode?: string }).rcode} ${rrs(p.answers)} ${rrs(p.additionals)}`)
    }
  }
  return out
}

/** What a Snapshot says, without identity: what a full rebuild must equal. */
function content(s: Snapshot): unknown {
  return { services: s.services, pods: s.pods, namespaces: s.namespaces, ingresses: s.ingresses }
}

function step(w: World, r: () => number, health: Map<string, PodHealth>, ejected: Map<string, string>): string {
  const pick = <T>(xs: readonly T[]): T | undefined => xs[Math.floor(r() * xs.length)]
  const names = [...w.services.keys()]
  const ns = pick(['default', 'a', 'b'])!
  const ip = () => `10.244.${Math.floor(r() * 4)}.${1 + Math.floor(r() * 200)}`
  const x = r()
  if (x < 0.2 || names.length === 0) {
    const name = `s${Math.floor(r() * 1e6)}`
    const kind = pick(['slices', 'selector', 'headless', 'external'] as const)!
    w.services.set(name, { ns, kind, ips: [ip(), ip()], port: 80, gen: 0 })
    if (kind === 'selector') w.pods.set(`${name}-p`, { ns, app: name, ip: ip(), probe: r() < 0.5 })
    return `add ${name} ${kind}`
  }
  const name = pick(names)!
  const s = w.services.get(name)!
  if (x < 0.3) {
    w.services.delete(name)
    for (const [p, pod] of w.pods) if (pod.app === name) w.pods.delete(p)
    return `remove ${name}`
  }
  if (x < 0.5) {
    s.gen++
    s.ips = s.ips.map((a) => (r() < 0.5 ? ip() : a))
    return `edit ${name}`
  }
  if (x < 0.6) {
    s.port = s.port === 80 ? 81 : 80
    return `port ${name}`
  }
  if (x < 0.75) {
    const pods = [...w.pods.entries()].filter(([, p]) => p.probe)
    const p = pick(pods)
    if (!p) return 'noop'
    const key = `${p[1].ns}/${p[0]}`
    const ready = !(health.get(key)?.ready ?? false)
    health.set(key, { ready, started: true, restartCount: 0, reason: ready ? null : 'probe' })
    return `flip ${key}`
  }
  if (x < 0.85 && s.kind === 'slices') {
    const k = `${s.ns}/${name}|${s.ips[0]}|8080`
    if (ejected.has(k)) ejected.delete(k)
    else ejected.set(k, 'test')
    return `eject ${k}`
  }
  return 'reparse'
}

t.test('random changes: incremental Snapshots, zone and fast path equal full rebuilds', async (t) => {
  for (const seed of [1, 2, 3, 4]) {
    const r = rng(seed)
    const w: World = { services: new Map(), pods: new Map() }
    const health = new Map<string, PodHealth>()
    const ejected = new Map<string, string>()
    let prev: AllocationState | null = null
    let before: Snapshot | null = null
    const index = new ZoneIndex(ZONE)
    let fast: FastPath | null = null
    const counts = new Float64Array(2000)
    let serial = 0
    let objects: KubeObject[] = []
    for (let i = 0; i < 40; i++) {
      const what = step(w, r, health, ejected)
      // A verdict or an ejection leaves the objects alone: the Store passes the same array again (the build's fast
      // path); every other step parses the world again.
      if (i === 0 || !/^(flip|eject|noop)/.test(what)) objects = objectsOf(w)
      const input = { version: i + 1, objects, errors: [], health: new Map(health), ejected: new Map(ejected) }
      const inc = buildSnapshot({ ...input, previous: prev }, OPTIONS)
      // The full rebuild: the same allocations carried over (they are state), nothing else reused.
      const fullPrev = prev ? { services: prev.services, loadBalancers: prev.loadBalancers } : null
      const full = buildSnapshot({ ...input, previous: fullPrev }, OPTIONS)
      const label = `seed ${seed} step ${i} (${what})`
      t.same(content(inc.snapshot), content(full.snapshot), `${label}: Snapshot`)

      if (before) {
        const ch = inc.snapshot.changes!
        const old = new Map(before.services.map((s) => [s.key, s]))
        for (const s of inc.snapshot.services) {
          const o = old.get(s.key)
          if (ch.services.has(s.key)) continue
          if (o !== s) t.fail(`${label}: ${s.key} unchanged but not shared`)
        }
        for (const k of ch.services) {
          const now = inc.snapshot.services.find((s) => s.key === k)
          if (now && old.get(k) === now) t.fail(`${label}: ${k} named as changed but the same object`)
        }
      }

      const snap = { ...inc.snapshot, builtAt: 1_700_000_000_000 + i * 1000 }
      const applied = index.apply(snap, serial)
      const reference = buildZone(snap, ZONE, serial)
      serial = applied.zone.serial
      t.same(zoneData(applied.zone), zoneData(reference), `${label}: zone`)
      t.equal(applied.zone.recordNames, reference.recordNames, `${label}: record names`)

      if (fast === null) fast = new FastPath(applied.zone, counts, countIndex)
      else fast.update(applied.zone, applied.changed)
      const names = [...reference.names.keys()].map(wireToText)
      names.push('gone.default.svc.cluster.local')
      const fresh = new FastPath(reference, new Float64Array(2000), countIndex)
      t.same(fastReplies(fast, names), fastReplies(fresh, names), `${label}: fast path`)
      prev = inc.allocations
      before = inc.snapshot
    }
  }
})

t.test('a file parsed again shares every unchanged object; one edit changes one Service', async (t) => {
  const w: World = { services: new Map(), pods: new Map() }
  for (let i = 0; i < 20; i++)
    w.services.set(`s${i}`, { ns: 'default', kind: 'slices', ips: [`10.1.0.${i + 1}`], port: 80, gen: 0 })
  const first = buildSnapshot(
    { version: 1, objects: objectsOf(w), errors: [], health: new Map(), ejected: new Map(), previous: null },
    OPTIONS,
  )
  const again = buildSnapshot(
    {
      version: 2,
      objects: objectsOf(w),
      errors: [],
      health: new Map(),
      ejected: new Map(),
      previous: first.allocations,
    },
    OPTIONS,
  )
  t.equal(again.snapshot.services, first.snapshot.services, 'the same list: nothing changed')
  t.same([...again.snapshot.changes!.services], [])
  w.services.get('s7')!.ips = ['10.1.1.1']
  const edited = buildSnapshot(
    {
      version: 3,
      objects: objectsOf(w),
      errors: [],
      health: new Map(),
      ejected: new Map(),
      previous: again.allocations,
    },
    OPTIONS,
  )
  t.same([...edited.snapshot.changes!.services], ['default/s7'])
  const shared = edited.snapshot.services.filter((s, i) => s === again.snapshot.services[i]).length
  t.equal(shared, 19, 'every other ServiceState is the same object')
  t.same(
    edited.snapshot.services.find((s) => s.key === 'default/s7')!.addresses.map((a) => a.ip),
    ['10.1.1.1'],
  )
})
