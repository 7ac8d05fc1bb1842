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
import { wantedFamilies } from '../model/allocate.ts'
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

/** The stored object's addresses this key still holds (what a previous apply claimed for it). */
function heldBy(key: string, stored: IKeyValue | null, claims: ReadonlyMap<string, Claim>): string[] {
  const s = stored ? serviceOf(key, stored.value) : null
  return (s?.spec.clusterIPs ?? []).filter((ip) => claims.get(ip)?.owner === key)
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
 * Writes every object in one transaction, with the ClusterIPs of its Services allocated (or kept, or freed) in the
 * same one. Returns the revision and the addresses written, by key. Throws MLT_STORE_ALLOCATION when an address a
 * manifest writes belongs to another object, a CIDR is full, or racing writers won MAX_ATTEMPTS times.
 */
export async function applyWithClaims(
  client: Etcd3,
  prefix: string,
  writes: ReadonlyMap<string, string>,
  cidrs: readonly Cidr[],
): Promise<{ revision: string; clusterIPs: Map<string, string[]> }> {
  const keys = [...writes.keys()]
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    const read = await readAt(client, prefix, keys).catch(fail)
    const planned = new Set<string>()
    const taken = (ip: string) => read.claims.has(ip) || planned.has(ip)
    const compare: ICompare[] = []
    const success: IRequestOp[] = []
    const clusterIPs = new Map<string, string[]>()
    const frees = new Set<string>()
    for (const [i, key] of keys.entries()) {
      const stored = read.objects[i] ?? null
      compare.push({ key: Buffer.from(key), target: 'Mod', result: 'Equal', mod_revision: stored?.mod_revision ?? 0 })
      let value = writes.get(key)!
      const svc = serviceOf(key, Buffer.from(value))
      const held = heldBy(key, stored, read.claims)
      let wanted: string[] = []
      if (svc && !svc.spec.headless && svc.spec.type !== 'ExternalName') {
        if (svc.spec.clusterIPs.length > 0) {
          wanted = [...svc.spec.clusterIPs]
          for (const ip of wanted) {
            const c = read.claims.get(ip)
            if ((c && c.owner !== key) || planned.has(ip))
              throw new StoreError(
                'MLT_STORE_ALLOCATION',
                `${key}: spec.clusterIPs: ${ip} is already allocated to ${c?.owner ?? 'another object of this apply'}`,
              )
          }
        } else {
          const fams = wantedFamilies(svc, cidrs)
          const fits =
            held.length === fams.length &&
            held.every((ip, j) => cidrs.some((c) => c.family === fams[j] && cidrContains(c, ip)))
          if (fits) wanted = held
          else if (fams.every((f) => cidrs.some((c) => c.family === f))) {
            for (const f of fams) {
              const cidr = cidrs.find((c) => c.family === f)!
              const ip = probe(`${svc.meta.namespace}/${svc.meta.name}`, cidr, (x) => taken(x) && !held.includes(x))
              if (ip === null)
                throw new StoreError('MLT_STORE_ALLOCATION', `${key}: the service CIDR ${cidr.text} is full`)
              wanted.push(ip)
            }
          }
          // Else a family without --service-cidr: nothing written, each node reports it as it does from a file.
          if (wanted.length > 0) {
            const doc = JSON.parse(value) as { spec: Record<string, unknown> }
            doc.spec.clusterIP = wanted[0]
            doc.spec.clusterIPs = wanted
            value = JSON.stringify(doc)
          }
        }
      }
      for (const ip of wanted) {
        planned.add(ip)
        const c = read.claims.get(ip)
        const k = Buffer.from(allocKey(prefix, ip))
        if (c) compare.push({ key: k, target: 'Mod', result: 'Equal', mod_revision: c.mod })
        else {
          compare.push({ key: k, target: 'Create', result: 'Equal', create_revision: 0 })
          success.push({ request_put: { key: k, value: Buffer.from(key) } })
        }
      }
      for (const ip of held) if (!wanted.includes(ip)) frees.add(ip)
      if (wanted.length > 0) clusterIPs.set(key, wanted)
      success.push({ request_put: { key: Buffer.from(key), value: Buffer.from(value) } })
    }
    for (const ip of frees) {
      if (planned.has(ip)) continue
      const k = Buffer.from(allocKey(prefix, ip))
      compare.push({ key: k, target: 'Mod', result: 'Equal', mod_revision: read.claims.get(ip)!.mod })
      success.push({ request_delete_range: { key: k } })
    }
    const res = await client.kv.txn({ compare, success, failure: [] }).catch(fail)
    if (res.succeeded) return { revision: res.header.revision, clusterIPs }
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
      for (const ip of heldBy(key, stored, read.claims)) {
        const k = Buffer.from(allocKey(prefix, ip))
        compare.push({ key: k, target: 'Mod', result: 'Equal', mod_revision: read.claims.get(ip)!.mod })
        success.push({ request_delete_range: { key: k } })
      }
    }
    const res = await client.kv.txn({ compare, success, failure: [] }).catch(fail)
    if (res.succeeded) return { revision: res.header.revision, deleted: read.objects.map((o) => o !== null) }
    await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 20)))
  }
  throw new StoreError('MLT_STORE_ALLOCATION', `other writers won ${MAX_ATTEMPTS} times in a row: nothing was deleted`)
}
