// ClusterIP allocation by compare-and-swap (issue 20), done by `meshlet apply` as the API server does it on create:
// the address is recorded under PREFIX/alloc/clusterip/<ip> → the object's key, created only when absent, and written
// into the stored Service's spec.clusterIPs in the same transaction. Every node then reads an explicit address, which
// model/allocate.ts honours first: all nodes agree, and a restart (or the deletion of another Service) moves nothing.
//
//   read the objects' keys and every claim at one revision ──► plan (keep, claim, free) ──► one txn:
//     compare: each object's mod revision as read, each new claim's create revision == 0, each kept or freed
//     claim's mod revision as read; success: the objects, the claims, the frees. A racing writer changed something:
//     read again and plan again (bounded).
//
// Services written around `apply` (etcdctl) without an address still get one from each node's deterministic pass.

import { createHash } from 'node:crypto'
import type { Etcd3, ICompare, IRequestOp, IResponseOp, IKeyValue } from 'etcd3'
import { bigIntToIp, cidrContains, type Cidr } from '../model/ip.ts'
import { NODE_PORT_MAX, NODE_PORT_MIN, wantedFamilies } from '../model/allocate.ts'
import type { Service } from '../model/objects.ts'
import { entryOf } from './source.ts'
import { allocKey, allocPrefix } from './keys.ts'
import { StoreError } from './errors.ts'
import { unreachable } from './apply.ts'

/** etcd did not answer: MLT_STORE_UNREACHABLE (nothing written, as a transaction is all or nothing). */
const fail = (err: unknown): never => {
  throw unreachable(err)
}

/** Attempts of one apply or delete before giving up: each failed one means another writer's transaction won. */
const MAX_ATTEMPTS = 64

interface Claim {
  readonly owner: string
  readonly mod: string
}

interface Read {
  readonly objects: (IKeyValue | null)[]
  readonly claims: Map<string, Claim>
}

const rangeEnd = (prefix: string) =>
  Buffer.from(prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1))

async function readAt(client: Etcd3, prefix: string, keys: readonly string[]): Promise<Read> {
  const p = allocPrefix(prefix)
  const res = await client.kv.txn({
    compare: [],
    success: [
      { request_range: { key: Buffer.from(p), range_end: rangeEnd(p) } },
      ...keys.map((key): IRequestOp => ({ request_range: { key: Buffer.from(key) } })),
    ],
    failure: [],
  })
  const kvsOf = (r: IResponseOp | undefined) => r?.response_range?.kvs ?? []
  const claims = new Map<string, Claim>()
  for (const kv of kvsOf(res.responses[0]))
    claims.set(kv.key.toString().slice(p.length), { owner: kv.value.toString(), mod: kv.mod_revision })
  return { claims, objects: keys.map((_, i) => kvsOf(res.responses[i + 1])[0] ?? null) }
}

function serviceOf(key: string, value: Buffer): Service | null {
  const e = entryOf(key, value)
  return e.object?.kind === 'Service' ? e.object : null
}

/** The slots (clusterip/<ip>, nodeport/<port>) the stored Service still holds: what a previous apply claimed. */
function heldBy(key: string, old: Service | null, claims: ReadonlyMap<string, Claim>): string[] {
  if (!old) return []
  const slots = [
    ...old.spec.clusterIPs.map((ip) => `clusterip/${ip}`),
    ...old.spec.ports.flatMap((p) => (p.nodePort === null ? [] : [`nodeport/${p.nodePort}`])),
    ...(old.spec.healthCheckNodePort === null ? [] : [`nodeport/${old.spec.healthCheckNodePort}`]),
  ]
  return slots.filter((slot) => claims.get(slot)?.owner === key)
}

/** The first free node port after a hash of the seed, as model/allocate.ts probes. */
function probePort(seed: string, taken: (port: number) => boolean): number | null {
  const span = NODE_PORT_MAX - NODE_PORT_MIN + 1
  const start = Number(BigInt('0x' + createHash('sha256').update(seed).digest('hex').slice(0, 16)) % BigInt(span))
  for (let i = 0; i < span; i++) {
    const port = NODE_PORT_MIN + ((start + i) % span)
    if (!taken(port)) return port
  }
  return null
}

/** The first free address after a hash of the key, as model/allocate.ts probes (bounded to 65,536 probes). */
function probe(key: string, cidr: Cidr, taken: (ip: string) => boolean): string | null {
  const usable = cidr.size - (cidr.family === 4 ? 2n : 1n)
  if (usable <= 0n) return null
  const start = BigInt('0x' + createHash('sha256').update(key).digest('hex').slice(0, 16)) % usable
  const limit = usable < 65536n ? usable : 65536n
  for (let i = 0n; i < limit; i++) {
    const ip = bigIntToIp(cidr.base + 1n + ((start + i) % usable), cidr.family)
    if (!taken(ip)) return ip
  }
  return null
}

/**
 * Writes every object in one transaction, with the ClusterIPs and node ports of its Services allocated (or kept, or
 * freed) in the same one. Returns the revision, the ClusterIPs written by key, and how many attempts it took. Throws MLT_STORE_ALLOCATION when an address a
 * manifest writes belongs to another object, a CIDR is full, or racing writers won MAX_ATTEMPTS times.
 */
export async function applyWithClaims(
  client: Etcd3,
  prefix: string,
  writes: ReadonlyMap<string, string>,
  cidrs: readonly Cidr[],
): Promise<{ revision: string; clusterIPs: Map<string, string[]>; attempts: number }> {
  const keys = [...writes.keys()]
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    const read = await readAt(client, prefix, keys).catch(fail)
    const planned = new Set<string>()
    const compare: ICompare[] = []
    const success: IRequestOp[] = []
    const clusterIPs = new Map<string, string[]>()
    const frees = new Set<string>()
    for (const [i, key] of keys.entries()) {
      const stored = read.objects[i] ?? null
      compare.push({ key: Buffer.from(key), target: 'Mod', result: 'Equal', mod_revision: stored?.mod_revision ?? 0 })
      let value = writes.get(key)!
      const svc = serviceOf(key, Buffer.from(value))
      const old = stored ? serviceOf(key, stored.value) : null
      const held = heldBy(key, old, read.claims)
      const wanted: string[] = []
      const name = svc ? `${svc.meta.namespace}/${svc.meta.name}` : ''
      const doc = JSON.parse(value) as { spec: Record<string, unknown> & { ports?: Record<string, unknown>[] } }
      let changed = false
      /** A slot the manifest writes: this object's already, or free; another's is refused as the API server does. */
      const explicit = (slot: string, what: string) => {
        const c = read.claims.get(slot)
        if ((c && c.owner !== key) || planned.has(slot))
          throw new StoreError(
            'MLT_STORE_ALLOCATION',
            `${key}: ${what} is already allocated to ${c?.owner ?? 'another object of this apply'}`,
          )
        wanted.push(slot)
        planned.add(slot)
      }
      const fresh = (slot: string) => {
        wanted.push(slot)
        planned.add(slot)
      }
      const free = (slot: string) => !planned.has(slot) && (!read.claims.has(slot) || held.includes(slot))
      if (svc && !svc.spec.headless && svc.spec.type !== 'ExternalName') {
        if (svc.spec.clusterIPs.length > 0) {
          for (const ip of svc.spec.clusterIPs) explicit(`clusterip/${ip}`, `spec.clusterIPs: ${ip}`)
        } else {
          const fams = wantedFamilies(svc, cidrs)
          const kept = held.filter((h) => h.startsWith('clusterip/')).map((h) => h.slice('clusterip/'.length))
          const fits =
            kept.length === fams.length &&
            kept.every((ip, j) => cidrs.some((c) => c.family === fams[j] && cidrContains(c, ip)))
          const ips: string[] = []
          if (fits) ips.push(...kept)
          else if (fams.every((f) => cidrs.some((c) => c.family === f))) {
            for (const f of fams) {
              const cidr = cidrs.find((c) => c.family === f)!
              const ip = probe(name, cidr, (x) => !free(`clusterip/${x}`))
              if (ip === null)
                throw new StoreError('MLT_STORE_ALLOCATION', `${key}: the service CIDR ${cidr.text} is full`)
              ips.push(ip)
            }
          }
          // Else a family without --service-cidr: nothing written, each node reports it as it does from a file.
          for (const ip of ips) fresh(`clusterip/${ip}`)
          if (ips.length > 0) {
            doc.spec.clusterIP = ips[0]
            doc.spec.clusterIPs = ips
            changed = true
            clusterIPs.set(key, ips)
          }
        }
      }
      if (svc && (svc.spec.type === 'NodePort' || svc.spec.type === 'LoadBalancer')) {
        for (const [j, p] of svc.spec.ports.entries()) {
          if (p.nodePort !== null) {
            explicit(`nodeport/${p.nodePort}`, `spec.ports[${j}].nodePort: ${p.nodePort}`)
            continue
          }
          // The port this Service had for the same port entry, while still its own; else a fresh one.
          const before = old?.spec.ports.find(
            (q) => q.port === p.port && q.protocol === p.protocol && q.name === p.name,
          )
          const keep = before?.nodePort ?? null
          const port =
            keep !== null && held.includes(`nodeport/${keep}`) && !planned.has(`nodeport/${keep}`)
              ? keep
              : probePort(`${name}|${p.name}|${p.protocol}|${p.port}`, (x) => !free(`nodeport/${x}`))
          if (port === null)
            throw new StoreError(
              'MLT_STORE_ALLOCATION',
              `${key}: no free node port in ${NODE_PORT_MIN}-${NODE_PORT_MAX}`,
            )
          fresh(`nodeport/${port}`)
          doc.spec.ports![j]!.nodePort = port
          changed = true
        }
        if (svc.spec.type === 'LoadBalancer' && svc.spec.externalTrafficPolicy === 'Local') {
          const hc = svc.spec.healthCheckNodePort
          if (hc !== null) explicit(`nodeport/${hc}`, `spec.healthCheckNodePort: ${hc}`)
          else {
            const keep = old?.spec.healthCheckNodePort ?? null
            const port =
              keep !== null && held.includes(`nodeport/${keep}`) && !planned.has(`nodeport/${keep}`)
                ? keep
                : probePort(`${name}|healthCheckNodePort`, (x) => !free(`nodeport/${x}`))
            if (port === null)
              throw new StoreError(
                'MLT_STORE_ALLOCATION',
                `${key}: no free node port in ${NODE_PORT_MIN}-${NODE_PORT_MAX}`,
              )
            fresh(`nodeport/${port}`)
            doc.spec.healthCheckNodePort = port
            changed = true
          }
        }
      }
      if (changed) value = JSON.stringify(doc)
      for (const slot of wanted) {
        const c = read.claims.get(slot)
        const k = Buffer.from(allocKey(prefix, slot))
        if (c) compare.push({ key: k, target: 'Mod', result: 'Equal', mod_revision: c.mod })
        else {
          compare.push({ key: k, target: 'Create', result: 'Equal', create_revision: 0 })
          success.push({ request_put: { key: k, value: Buffer.from(key) } })
        }
      }
      for (const slot of held) if (!wanted.includes(slot)) frees.add(slot)
      success.push({ request_put: { key: Buffer.from(key), value: Buffer.from(value) } })
    }
    for (const slot of frees) {
      if (planned.has(slot)) continue
      const k = Buffer.from(allocKey(prefix, slot))
      compare.push({ key: k, target: 'Mod', result: 'Equal', mod_revision: read.claims.get(slot)!.mod })
      success.push({ request_delete_range: { key: k } })
    }
    const res = await client.kv.txn({ compare, success, failure: [] }).catch(fail)
    if (res.succeeded) return { revision: res.header.revision, clusterIPs, attempts: attempt + 1 }
    await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 20)))
  }
  throw new StoreError('MLT_STORE_ALLOCATION', `other writers won ${MAX_ATTEMPTS} times in a row: nothing was written`)
}

/** Deletes the objects and frees the ClusterIPs they hold, in one transaction; per key, whether it existed. */
export async function deleteWithClaims(
  client: Etcd3,
  prefix: string,
  keys: readonly string[],
): Promise<{ revision: string; deleted: boolean[] }> {
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    const read = await readAt(client, prefix, keys).catch(fail)
    const compare: ICompare[] = []
    const success: IRequestOp[] = []
    for (const [i, key] of keys.entries()) {
      const stored = read.objects[i] ?? null
      compare.push({ key: Buffer.from(key), target: 'Mod', result: 'Equal', mod_revision: stored?.mod_revision ?? 0 })
      success.push({ request_delete_range: { key: Buffer.from(key) } })
      for (const slot of heldBy(key, stored ? serviceOf(key, stored.value) : null, read.claims)) {
        const k = Buffer.from(allocKey(prefix, slot))
        compare.push({ key: k, target: 'Mod', result: 'Equal', mod_revision: read.claims.get(slot)!.mod })
        success.push({ request_delete_range: { key: k } })
      }
    }
    const res = await client.kv.txn({ compare, success, failure: [] }).catch(fail)
    if (res.succeeded) return { revision: res.header.revision, deleted: read.objects.map((o) => o !== null) }
    await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 20)))
  }
  throw new StoreError('MLT_STORE_ALLOCATION', `other writers won ${MAX_ATTEMPTS} times in a row: nothing was deleted`)
}
