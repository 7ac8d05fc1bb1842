// Builds one Snapshot from the Store's inputs: objects grouped by kind, allocations, and every Service's endpoints
// derived as Kubernetes derives them (specs/l4-health.md §2.1): selector → Pods; no selector → EndpointSlices, or
// Endpoints when no slice names the Service.

import type {
  Endpoints,
  EndpointSlice,
  Ingress,
  IngressClass,
  IPAddressPool,
  KubeObject,
  L2Advertisement,
  Node,
  Pod,
  Secret,
  Service,
  ServicePort,
} from './objects.ts'
import { objectKey } from './objects.ts'
import type {
  AddressState,
  EndpointState,
  ObjectError,
  PodHealth,
  PodState,
  ServicePortState,
  ServiceState,
  Snapshot,
  SnapshotChanges,
} from './snapshot.ts'
import { ejectionKey } from './snapshot.ts'
import { STEP_ITEMS, allocateAddressesSteps, drain, type AllocationMap, type ServiceAllocation } from './allocate.ts'
import { allocateLoadBalancers, type LoadBalancerAllocation, type LoadBalancerAllocationMap } from './lb-allocator.ts'
import { ipFamily, type Cidr } from './ip.ts'

export interface BuildOptions {
  /** This node's name (--node). */
  readonly nodeName: string
  /** --service-cidr, parsed; at most one per family. */
  readonly serviceCidrs: readonly Cidr[]
}

export interface AllocationState {
  readonly services: AllocationMap
  readonly loadBalancers: LoadBalancerAllocationMap
  /** What this build derived, for the next build to reuse (absent: nothing to reuse). */
  readonly memo?: BuildMemo
}

/** Inputs and output of one Service's derivation: when every input is the same object again, so is the output. */
interface ServiceMemo {
  readonly state: ServiceState
  readonly service: Service
  readonly slices: readonly EndpointSlice[] | null
  readonly endpoints: Endpoints | null
  readonly alloc: ServiceAllocation | undefined
  readonly lb: LoadBalancerAllocation | undefined
  /** Selector Services: the PodStates of the namespace, in order (each matched or not is decided from them). */
  readonly pods: readonly PodState[] | null
  readonly zones: string
  readonly ejected: string
}

/**
 * What a build keeps for the next one (issue 14): objects by kind and key (an unchanged object keeps its identity even
 * when a reload parsed it again), PodStates, and per Service its inputs and ServiceState. The next Snapshot reuses
 * every per-Service object whose inputs are the same, so planes find what changed by identity.
 */
export interface BuildMemo {
  /** What was derived from the objects alone (and the allocations they gave). */
  readonly fromObjects: ObjectsMemo
  readonly objects: ReadonlyMap<string, KubeObject>
  readonly pods: ReadonlyMap<string, PodState>
  readonly services: ReadonlyMap<string, ServiceMemo>
  readonly lists: Readonly<Record<keyof ByKind, readonly unknown[]>>
  readonly serviceList: readonly ServiceState[]
  readonly podList: readonly PodState[]
  readonly namespaces: readonly string[]
  readonly namespaceCounts: ReadonlyMap<string, number>
  /** The PodStates of each namespace, as the Services of that namespace saw them. */
  readonly podsByNamespace: ReadonlyMap<string, readonly PodState[]>
  /** Each Service's ejections as one string (ejectionsByService). */
  readonly ejections: ReadonlyMap<string, string>
}

/**
 * Everything a build derives from the objects array alone. A build whose objects array is the previous build's (a
 * probe verdict, an ejection, a node's liveness: the Store passes the same array again) reuses it whole and re-derives
 * only the Services the change reaches: the selector Services of the namespaces whose Pods changed, and the Services
 * whose ejections changed (issue 14: a flip at 10,000 Services costs what it touches, not a pass over every object).
 */
interface ObjectsMemo {
  readonly input: readonly KubeObject[]
  readonly g: ByKind
  readonly interned: ReadonlyMap<string, KubeObject>
  readonly alloc: ReadonlyMap<string, ServiceAllocation>
  readonly lbAlloc: ReadonlyMap<string, LoadBalancerAllocation>
  readonly zones: ReadonlyMap<string, string>
  readonly zonesText: string
  readonly slicesByService: ReadonlyMap<string, EndpointSlice[]>
  readonly endpointsByKey: ReadonlyMap<string, Endpoints>
  /** Positions in g.services of the selector Services, by namespace. */
  readonly selectorServices: ReadonlyMap<string, readonly number[]>
  /** Position in g.services by Service key. */
  readonly positions: ReadonlyMap<string, number>
  /** Objects per namespace. */
  readonly namespaceCounts: ReadonlyMap<string, number>
  /** Set when a later build took over `interned` (and the Service memos) to change them in place. */
  readonly claim: { taken: boolean }
}

interface Grouped {
  readonly g: ByKind
  readonly interned: Map<string, KubeObject>
  /** Objects whose id the previous build did not have, and objects of the previous build whose id is gone. */
  readonly fresh: readonly KubeObject[]
  readonly gone: readonly KubeObject[]
  /** Kinds whose list is not the previous build's. */
  readonly touched: ReadonlySet<keyof ByKind>
}

/**
 * The grouping of the previous build, patched with what differs by identity from its input array (issue 14: a reload
 * of one file among a hundred gives back the other files' objects as the same objects, so a Set lookup per object
 * replaces a key computation, a Map lookup and a deep comparison each). Null when a full grouping is needed.
 */
function* groupChanged(objects: readonly KubeObject[], memo: BuildMemo): Generator<void, Grouped | null> {
  const prevInput = memo.fromObjects.input
  // config/ concatenates files in a stable order, so a reload of some files leaves a common prefix and suffix: what
  // lies between is removed (previous) and added (current). An unchanged object that falls in between is removed and
  // added again, and interning gives it back its identity: correct, only slower.
  let head = 0
  const min = Math.min(prevInput.length, objects.length)
  while (head < min && prevInput[head] === objects[head]) head++
  let tail = 0
  while (tail < min - head && prevInput[prevInput.length - 1 - tail] === objects[objects.length - 1 - tail]) tail++
  const removed = prevInput.slice(head, prevInput.length - tail)
  const added = objects.slice(head, objects.length - tail)
  const previous = memo.objects
  const removedIds = new Set<string>()
  for (const raw of removed) {
    const id = idOf(raw)
    if (removedIds.has(id) || !previous.has(id)) return null
    removedIds.add(id)
  }
  const addedIds = new Set<string>()
  for (const raw of added) {
    const id = idOf(raw)
    if (addedIds.has(id) || (previous.has(id) && !removedIds.has(id))) return null // two objects with one id
    addedIds.add(id)
  }
  // Valid: the previous build's id map becomes this build's, changed in place (copying 20,000 entries per reload is
  // what this avoids); the previous memo can no longer be built from (`claim`).
  memo.fromObjects.claim.taken = true
  const interned = previous as Map<string, KubeObject>
  const touched = new Set<keyof ByKind>()
  /** Interned objects replaced (old → new) or gone; per kind, the new ones. */
  const replaced = new Map<KubeObject, KubeObject>()
  const gone = new Set<KubeObject>()
  const fresh: KubeObject[] = []
  const freshByKind = new Map<keyof ByKind, KubeObject[]>()
  const before = new Map<string, KubeObject>()
  for (const id of removedIds) {
    before.set(id, interned.get(id)!)
    interned.delete(id)
  }
  for (const raw of added) {
    const id = idOf(raw)
    const prev = before.get(id)
    const o = prev !== undefined && (prev === raw || sameData(prev, raw)) ? prev : raw
    interned.set(id, o)
    const kind = KINDS[o.kind]
    if (kind === undefined) throw new Error(`unhandled kind ${o.kind}`)
    if (prev === undefined) {
      fresh.push(o)
      if (kind === null) continue
      touched.add(kind)
      let list = freshByKind.get(kind)
      if (!list) freshByKind.set(kind, (list = []))
      list.push(o)
    } else if (o !== prev) {
      replaced.set(prev, o)
      if (kind !== null) touched.add(kind)
    }
  }
  for (const [id, o] of before) {
    if (addedIds.has(id)) continue
    gone.add(o)
    const kind = KINDS[o.kind]
    if (kind) touched.add(kind)
  }
  const lists = memo.fromObjects.g
  const g = { ...lists }
  for (const kind of touched) {
    const list: KubeObject[] = []
    const add = (freshByKind.get(kind) ?? []).sort(byKey)
    let a = 0
    let step = 0
    for (const b of lists[kind] as readonly KubeObject[]) {
      // The previous build's id map is claimed above: no other build runs from it while this one yields.
      if (++step % STEP_ITEMS === 0) yield
      if (gone.has(b)) continue
      const cur = replaced.get(b) ?? b
      while (a < add.length && byKey(add[a]!, cur) < 0) list.push(add[a++]!)
      list.push(cur)
    }
    while (a < add.length) list.push(add[a++]!)
    ;(g as Record<keyof ByKind, KubeObject[]>)[kind] = list
  }
  return { g, interned, fresh, gone: [...gone], touched }
}

/** "namespace/name" of the Service an EndpointSlice belongs to, once per slice. */
const sliceService = new WeakMap<EndpointSlice, string>()
function serviceOfSlice(sl: EndpointSlice): string {
  let k = sliceService.get(sl)
  if (k === undefined) sliceService.set(sl, (k = `${sl.meta.namespace}/${sl.serviceName}`))
  return k
}

/** Groups the objects, allocates addresses and indexes endpoints sources: the part of a build a flip does not need. */
function* deriveFromObjects(
  input: BuildInput,
  options: BuildOptions,
  memo: BuildMemo | null,
): Generator<void, ObjectsMemo> {
  // A memo another build already took the id map of cannot be built from again: a full grouping then.
  const usable = memo !== null && !memo.fromObjects.claim.taken ? memo : null
  const before = usable?.fromObjects ?? null
  let grouped = usable ? yield* groupChanged(input.objects, usable) : null
  if (grouped === null) {
    const interned = new Map<string, KubeObject>()
    const fresh: KubeObject[] = []
    const g = yield* groupByKind(input.objects, usable, interned, fresh)
    const gone: KubeObject[] = []
    if (usable) for (const [id, o] of usable.objects) if (!interned.has(id)) gone.push(o)
    grouped = { g, interned, fresh, gone, touched: new Set(Object.keys(g) as (keyof ByKind)[]) }
  }
  const { g, interned, fresh, gone, touched } = grouped
  // Between phases too: each is a pass over 10,000 objects at most (the Store decides whether to take a turn).
  yield
  // Each index below is rebuilt only when a kind it reads changed (the others are the previous build's).
  const keep = (...kinds: (keyof ByKind)[]) => before !== null && kinds.every((k) => !touched.has(k))
  let zones: ReadonlyMap<string, string>
  if (keep('nodes')) zones = before!.zones
  else {
    const z = new Map<string, string>()
    for (const n of g.nodes) if (n.zone) z.set(n.meta.name, n.zone)
    zones = z
  }
  const previousAlloc = input.previous?.services ?? null
  const alloc =
    keep('services') && previousAlloc === before!.alloc
      ? before!.alloc
      : yield* allocateAddressesSteps(g.services, options.serviceCidrs, previousAlloc)
  yield
  const previousLb = input.previous?.loadBalancers ?? null
  const lbAlloc =
    keep('services', 'pools') && previousLb === before!.lbAlloc
      ? before!.lbAlloc
      : allocateLoadBalancers(g.services, g.pools, previousLb)
  yield
  let slicesByService: ReadonlyMap<string, EndpointSlice[]>
  if (keep('slices')) slicesByService = before!.slicesByService
  else {
    const m = new Map<string, EndpointSlice[]>()
    for (const sl of g.slices) {
      if (!sl.serviceName) continue
      const key = serviceOfSlice(sl)
      let list = m.get(key)
      if (!list) m.set(key, (list = []))
      list.push(sl)
    }
    slicesByService = m
  }
  let endpointsByKey: ReadonlyMap<string, Endpoints>
  if (keep('endpoints')) endpointsByKey = before!.endpointsByKey
  else {
    const m = new Map<string, Endpoints>()
    for (const e of g.endpoints) m.set(keyOf(e), e)
    endpointsByKey = m
  }
  yield
  let selectorServices: ReadonlyMap<string, readonly number[]>
  let positions: ReadonlyMap<string, number>
  if (keep('services')) {
    selectorServices = before!.selectorServices
    positions = before!.positions
  } else {
    const sel = new Map<string, number[]>()
    const pos = new Map<string, number>()
    g.services.forEach((s, i) => {
      pos.set(keyOf(s), i)
      if (s.spec.type === 'ExternalName' || s.spec.selector === null) return
      let list = sel.get(s.meta.namespace)
      if (!list) sel.set(s.meta.namespace, (list = []))
      list.push(i)
    })
    selectorServices = sel
    positions = pos
  }
  return {
    input: input.objects,
    g,
    interned,
    alloc,
    lbAlloc,
    zones,
    zonesText: keep('nodes') ? before!.zonesText : [...zones].join(';'),
    slicesByService,
    endpointsByKey,
    selectorServices,
    positions,
    namespaceCounts: countNamespaces(interned, fresh, gone, before?.namespaceCounts ?? null),
    claim: { taken: false },
  }
}

export interface BuildInput {
  readonly version: number
  readonly objects: readonly KubeObject[]
  readonly errors: readonly ObjectError[]
  readonly health: ReadonlyMap<string, PodHealth>
  readonly ejected: ReadonlyMap<string, string>
  /** Node name → alive, from membership/; absent in older callers = nothing known. */
  readonly nodeLiveness?: ReadonlyMap<string, boolean>
  /** Nodes holding an etcd lease (etcd mode); null or absent in file mode. Kept by identity while unchanged. */
  readonly liveNodes?: readonly string[] | null
  readonly previous: AllocationState | null
}

interface ByKind {
  services: Service[]
  pods: Pod[]
  endpoints: Endpoints[]
  slices: EndpointSlice[]
  ingresses: Ingress[]
  ingressClasses: IngressClass[]
  secrets: Secret[]
  nodes: Node[]
  pools: IPAddressPool[]
  l2: L2Advertisement[]
}

/** Deep equality of plain data (validated objects are JSON-shaped). */
export function sameData(a: unknown, b: unknown): boolean {
  if (a === b) return true
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false
    for (let i = 0; i < a.length; i++) if (!sameData(a[i], b[i])) return false
    return true
  }
  if (Array.isArray(b)) return false
  const ka = Object.keys(a)
  if (ka.length !== Object.keys(b).length) return false
  for (const k of ka) {
    if (!Object.hasOwn(b, k)) return false
    if (!sameData((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k])) return false
  }
  return true
}

/** "namespace/name" of an object, computed once per object (objects are immutable). */
const keyCache = new WeakMap<KubeObject, string>()
export function keyOf(o: KubeObject): string {
  let k = keyCache.get(o)
  if (k === undefined) keyCache.set(o, (k = objectKey(o.meta)))
  return k
}
const idCache = new WeakMap<KubeObject, string>()
function idOf(o: KubeObject): string {
  let k = idCache.get(o)
  if (k === undefined) idCache.set(o, (k = `${o.kind}|${keyOf(o)}`))
  return k
}

const KINDS: Record<KubeObject['kind'], keyof ByKind | null> = {
  Service: 'services',
  Pod: 'pods',
  Endpoints: 'endpoints',
  EndpointSlice: 'slices',
  Ingress: 'ingresses',
  IngressClass: 'ingressClasses',
  Secret: 'secrets',
  Node: 'nodes',
  IPAddressPool: 'pools',
  L2Advertisement: 'l2',
  // Its replicas arrive as Pods made by config/dns-discovery.ts; the Deployment itself derives nothing here.
  Deployment: null,
}

/**
 * Groups by kind, sorted by key, each object replaced by the previous build's when equal: a reload that parsed a file
 * again gives back the same objects for what did not change. `interned` receives kind|key → object, `fresh` the
 * objects whose id the previous build did not have. A kind keeps the previous build's order, new keys merged in, without sorting again.
 */
function* groupByKind(
  objects: readonly KubeObject[],
  memo: BuildMemo | null,
  interned: Map<string, KubeObject>,
  fresh: KubeObject[],
): Generator<void, ByKind> {
  const g: ByKind = {
    services: [],
    pods: [],
    endpoints: [],
    slices: [],
    ingresses: [],
    ingressClasses: [],
    secrets: [],
    nodes: [],
    pools: [],
    l2: [],
  }
  const previous = memo?.objects ?? null
  /** Per kind, the objects whose key the previous build did not have. */
  const grown = new Map<keyof ByKind, KubeObject[]>()
  let duplicates = false
  let step = 0
  for (const raw of objects) {
    if (++step % STEP_ITEMS === 0) yield
    const id = idOf(raw)
    const prev = previous?.get(id)
    const o = prev !== undefined && (prev === raw || sameData(prev, raw)) ? prev : raw
    if (interned.has(id)) duplicates = true
    else if (prev === undefined) fresh.push(raw)
    interned.set(id, o)
    const kind = KINDS[o.kind]
    if (kind === null) continue
    if (kind === undefined) throw new Error(`unhandled kind ${o.kind}`)
    ;(g[kind] as KubeObject[]).push(o)
    if (prev === undefined) {
      let added = grown.get(kind)
      if (!added) grown.set(kind, (added = []))
      added.push(o)
    }
  }
  for (const kind of Object.keys(g) as (keyof ByKind)[]) {
    yield
    const list = g[kind] as KubeObject[]
    const before = memo?.lists[kind] as readonly KubeObject[] | undefined
    if (before === undefined || duplicates) {
      list.sort(byKey)
      continue
    }
    // The previous order of the keys still present, each object's current version, with the new keys merged in:
    // sorting 10,000 Services again because one was added is what a one-Service edit must not cost.
    const added = (grown.get(kind) ?? []).sort(byKey)
    let n = 0
    let a = 0
    for (const b of before) {
      const cur = interned.get(idOf(b))
      if (cur === undefined) continue
      while (a < added.length && byKey(added[a]!, cur) < 0) list[n++] = added[a++]!
      list[n++] = cur
    }
    while (a < added.length) list[n++] = added[a++]!
    list.length = n
  }
  return g
}

function byKey(a: KubeObject, b: KubeObject): number {
  const x = keyOf(a)
  const y = keyOf(b)
  return x < y ? -1 : x > y ? 1 : 0
}

/** A Pod with a readiness or startup probe starts not ready; one without is ready as soon as it is loaded. */
export function podHasGatingProbe(pod: Pod): boolean {
  return pod.spec.containers.some((c) => c.readinessProbe !== null || c.startupProbe !== null)
}

function podStates(
  pods: readonly Pod[],
  health: ReadonlyMap<string, PodHealth>,
  previous: ReadonlyMap<string, PodState> | null,
): PodState[] {
  return pods.map((pod) => {
    const key = keyOf(pod)
    const h = health.get(key) ?? null
    const old = previous?.get(key)
    if (old && old.pod === pod && old.health === h) return old
    const ready = h ? h.ready : !podHasGatingProbe(pod)
    return { key, pod, ready, health: h }
  })
}

function labelsMatch(selector: Readonly<Record<string, string>>, labels: Readonly<Record<string, string>>): boolean {
  for (const k in selector) if (labels[k] !== selector[k]) return false
  return true
}

/** Resolves a Service port's targetPort against a Pod's containers (name and protocol must match). */
function resolveTargetPort(sp: ServicePort, pod: Pod): number | null {
  if (typeof sp.targetPort === 'number') return sp.targetPort
  for (const c of pod.spec.containers) {
    for (const cp of c.ports) if (cp.name === sp.targetPort && cp.protocol === sp.protocol) return cp.containerPort
  }
  return null
}

function familiesOf(s: Service, clusterIPs: readonly string[]): Set<number> | null {
  if (s.spec.ipFamilies.length > 0) return new Set(s.spec.ipFamilies.map((f) => (f === 'IPv4' ? 4 : 6)))
  if (clusterIPs.length > 0) return new Set(clusterIPs.map((ip) => ipFamily(ip)))
  return null // headless without ipFamilies: every address the Pod has
}

interface Hinting {
  readonly mode: 'node' | 'zone' | null
}

function hintsFor(s: Service): Hinting {
  const td = s.spec.trafficDistribution
  if (td === 'PreferSameNode') return { mode: 'node' }
  if (td === 'PreferClose' || td === 'PreferSameZone') return { mode: 'zone' }
  return { mode: null }
}

function endpointsFromPods(
  s: Service,
  pods: readonly PodState[],
  clusterIPs: readonly string[],
  zones: ReadonlyMap<string, string>,
  warnings: string[],
): { perPort: EndpointState[][]; addresses: AddressState[] } {
  const selector = s.spec.selector!
  const families = familiesOf(s, clusterIPs)
  const hint = hintsFor(s)
  const perPort: EndpointState[][] = s.spec.ports.map(() => [])
  const addresses: AddressState[] = []
  for (const ps of pods) {
    const pod = ps.pod
    if (pod.meta.namespace !== s.meta.namespace || !labelsMatch(selector, pod.meta.labels)) continue
    if (pod.status.podIPs.length === 0) continue
    const terminating = pod.meta.deletionTimestamp !== null
    const ready = s.spec.publishNotReadyAddresses || (ps.ready && !terminating)
    const serving = ps.ready
    const nodeName = pod.spec.nodeName
    const zone = nodeName ? (zones.get(nodeName) ?? null) : null
    // The endpoints controller only sets hostname when the Pod's subdomain names this Service.
    const hostname = pod.spec.hostname && pod.spec.subdomain === s.meta.name ? pod.spec.hostname : null
    const forZones = hint.mode && zone ? [zone] : null
    const forNodes = hint.mode === 'node' && nodeName ? [nodeName] : null
    for (const ip of pod.status.podIPs) {
      if (families && !families.has(ipFamily(ip))) continue
      addresses.push({ ip, ready, serving, terminating, hostname, nodeName, pod: ps.key })
      for (const [i, sp] of s.spec.ports.entries()) {
        const port = resolveTargetPort(sp, pod)
        if (port === null) {
          warnings.push(
            `Pod ${ps.key} has no container port named "${sp.targetPort}" (${sp.protocol}); left out of port ${sp.name || sp.port}`,
          )
          continue
        }
        perPort[i]!.push({
          ip,
          port,
          ready,
          serving,
          terminating,
          nodeName,
          zone,
          hostname,
          pod: ps.key,
          forNodes,
          forZones,
        })
      }
    }
  }
  return { perPort, addresses }
}

function podRef(ref: { kind: string; namespace: string; name: string } | null): string | null {
  return ref && ref.kind === 'Pod' ? `${ref.namespace}/${ref.name}` : null
}

/** Endpoints' and slices' ports are matched to Service ports by name, as kube-proxy does. */
function portIndex(s: Service, name: string): number {
  return s.spec.ports.findIndex((p) => p.name === name)
}

function endpointsFromSlices(
  s: Service,
  slices: readonly EndpointSlice[],
): { perPort: EndpointState[][]; addresses: AddressState[] } {
  const perPort: EndpointState[][] = s.spec.ports.map(() => [])
  const addresses: AddressState[] = []
  for (const slice of slices) {
    if (slice.addressType === 'FQDN') continue
    for (const ep of slice.endpoints) {
      const ready = ep.conditions.ready ?? true
      const serving = ep.conditions.serving ?? ready
      const terminating = ep.conditions.terminating ?? false
      const pod = podRef(ep.targetRef)
      const forZones = ep.hints && ep.hints.forZones.length > 0 ? ep.hints.forZones : null
      const forNodes = ep.hints && ep.hints.forNodes.length > 0 ? ep.hints.forNodes : null
      for (const ip of ep.addresses) {
        addresses.push({ ip, ready, serving, terminating, hostname: ep.hostname, nodeName: ep.nodeName, pod })
        for (const p of slice.ports) {
          const i = portIndex(s, p.name)
          if (i < 0 || s.spec.ports[i]!.protocol !== p.protocol) continue
          perPort[i]!.push({
            ip,
            port: p.port,
            ready,
            serving,
            terminating,
            nodeName: ep.nodeName,
            zone: ep.zone,
            hostname: ep.hostname,
            pod,
            forNodes,
            forZones,
          })
        }
      }
    }
  }
  return { perPort, addresses }
}

function endpointsFromEndpoints(s: Service, eps: Endpoints): { perPort: EndpointState[][]; addresses: AddressState[] } {
  const perPort: EndpointState[][] = s.spec.ports.map(() => [])
  const addresses: AddressState[] = []
  for (const subset of eps.subsets) {
    const groups = [
      { list: subset.addresses, ready: true },
      { list: subset.notReadyAddresses, ready: false },
    ]
    for (const { list, ready } of groups) {
      for (const a of list) {
        const pod = podRef(a.targetRef)
        addresses.push({
          ip: a.ip,
          ready,
          serving: ready,
          terminating: false,
          hostname: a.hostname,
          nodeName: a.nodeName,
          pod,
        })
        for (const p of subset.ports) {
          const i = portIndex(s, p.name)
          if (i < 0 || s.spec.ports[i]!.protocol !== p.protocol) continue
          perPort[i]!.push({
            ip: a.ip,
            port: p.port,
            ready,
            serving: ready,
            terminating: false,
            nodeName: a.nodeName,
            zone: null,
            hostname: a.hostname,
            pod,
            forNodes: null,
            forZones: null,
          })
        }
      }
    }
  }
  return { perPort, addresses }
}

function compareEndpoints(a: EndpointState, b: EndpointState): number {
  if (a.ip !== b.ip) return a.ip < b.ip ? -1 : 1
  return a.port - b.port
}

/** One entry per ip:port; a ready duplicate wins over a not-ready one (overlapping slices). */
function dedupeEndpoints(list: EndpointState[]): EndpointState[] {
  list.sort(compareEndpoints)
  const out: EndpointState[] = []
  for (const ep of list) {
    const last = out[out.length - 1]
    if (last && last.ip === ep.ip && last.port === ep.port) {
      if (ep.ready && !last.ready) out[out.length - 1] = ep
      continue
    }
    out.push(ep)
  }
  return out
}

function dedupeAddresses(list: AddressState[]): AddressState[] {
  const byIp = new Map<string, AddressState>()
  for (const a of list) {
    const old = byIp.get(a.ip)
    if (!old || (a.ready && !old.ready)) byIp.set(a.ip, a)
  }
  return [...byIp.values()].sort((a, b) => (a.ip < b.ip ? -1 : a.ip > b.ip ? 1 : 0))
}

function applyEjections(
  serviceKey: string,
  list: EndpointState[],
  ejected: ReadonlyMap<string, string>,
): EndpointState[] {
  if (ejected.size === 0) return list
  return list.map((ep) =>
    ejected.has(ejectionKey(serviceKey, ep.ip, ep.port)) ? { ...ep, ready: false, serving: false } : ep,
  )
}

/** Objects per namespace, from the previous counts and what was added or removed since. */
function countNamespaces(
  interned: ReadonlyMap<string, KubeObject>,
  fresh: readonly KubeObject[],
  gone: readonly KubeObject[],
  previous: ReadonlyMap<string, number> | null,
): ReadonlyMap<string, number> {
  if (previous && fresh.length === 0 && gone.length === 0) return previous
  const counts = new Map<string, number>(previous ?? [])
  const bump = (ns: string, by: number) => {
    if (!ns) return
    const n = (counts.get(ns) ?? 0) + by
    if (n === 0) counts.delete(ns)
    else counts.set(ns, n)
  }
  if (previous) for (const o of fresh) bump(o.meta.namespace, 1)
  else for (const o of interned.values()) bump(o.meta.namespace, 1)
  for (const o of gone) bump(o.meta.namespace, -1)
  return counts
}

/** The same list again when every element is the same object: planes may compare lists by identity. */
function sameList<T>(next: T[], prev: readonly unknown[] | undefined): readonly T[] {
  if (!prev || prev.length !== next.length) return next
  for (let i = 0; i < next.length; i++) if (next[i] !== prev[i]) return next
  return prev as readonly T[]
}

function keysOf<T>(list: readonly T[], prev: readonly T[] | undefined, key: (x: T) => string, into: Set<string>): void {
  if (list === prev) return
  const before = new Map<string, T>()
  for (const x of prev ?? []) before.set(key(x), x)
  for (const x of list) {
    const k = key(x)
    if (before.get(k) !== x) into.add(k)
    before.delete(k)
  }
  for (const k of before.keys()) into.add(k)
}

/** "serviceKey" → its ejections as one string, so a Service is re-derived only when its own ejections change. */
function ejectionsByService(ejected: ReadonlyMap<string, string>): Map<string, string> {
  const out = new Map<string, string>()
  if (ejected.size === 0) return out
  const keys = [...ejected.keys()].sort()
  for (const k of keys) {
    const svc = k.slice(0, k.indexOf('|'))
    out.set(svc, `${out.get(svc) ?? ''}${k}=${ejected.get(k)}\n`)
  }
  return out
}

function sameRefs(a: readonly unknown[] | null, b: readonly unknown[] | null): boolean {
  if (a === b) return true
  if (a === null || b === null || a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

function deriveService(
  s: Service,
  key: string,
  a: ServiceAllocation | undefined,
  lb: LoadBalancerAllocation | undefined,
  inputs: {
    pods: readonly PodState[] | null
    slices: readonly EndpointSlice[] | null
    endpoints: Endpoints | null
    zones: ReadonlyMap<string, string>
    ejected: ReadonlyMap<string, string>
  },
): ServiceState {
  const warnings: string[] = [...(a?.errors ?? [])]
  const clusterIPs = a?.clusterIPs ?? []
  let derived: { perPort: EndpointState[][]; addresses: AddressState[] }
  if (s.spec.type === 'ExternalName') derived = { perPort: s.spec.ports.map(() => []), addresses: [] }
  else if (s.spec.selector) derived = endpointsFromPods(s, inputs.pods ?? [], clusterIPs, inputs.zones, warnings)
  else if (inputs.slices) derived = endpointsFromSlices(s, inputs.slices)
  else if (inputs.endpoints) derived = endpointsFromEndpoints(s, inputs.endpoints)
  else derived = { perPort: s.spec.ports.map(() => []), addresses: [] }

  const ports: ServicePortState[] = s.spec.ports.map((p, i) => ({
    name: p.name,
    protocol: p.protocol,
    port: p.port,
    targetPort: p.targetPort,
    nodePort: a?.nodePorts[i] ?? null,
    appProtocol: p.appProtocol,
    endpoints: applyEjections(key, dedupeEndpoints(derived.perPort[i] ?? []), inputs.ejected),
  }))
  if (s.meta.annotations['service.kubernetes.io/topology-mode'] === 'Auto') {
    warnings.push('service.kubernetes.io/topology-mode: Auto (proportional hints) is not supported; hints are off')
  }
  return {
    key,
    namespace: s.meta.namespace,
    name: s.meta.name,
    service: s,
    headless: s.spec.headless,
    clusterIPs,
    loadBalancerIPs: lb?.ips ?? [],
    loadBalancerPool: lb?.pool ?? null,
    loadBalancerPending: lb?.pending ?? null,
    loadBalancerStale: lb?.stale ?? false,
    healthCheckNodePort: a?.healthCheckNodePort ?? null,
    ports,
    addresses: dedupeAddresses(derived.addresses),
    warnings: [...new Set(warnings)],
  }
}

export interface BuildResult {
  readonly snapshot: Snapshot
  readonly allocations: AllocationState
}

export function buildSnapshot(input: BuildInput, options: BuildOptions): BuildResult {
  return drain(buildSnapshotSteps(input, options))
}

/**
 * buildSnapshot in steps (issue 14): it yields every few hundred objects or Services while grouping, allocating and
 * deriving Services, so the Store can spread a big build (the first one at 10,000 Services: seconds) over many turns
 * of the event loop. A build from the previous one's objects (a probe verdict, an ejection) never yields. The inputs
 * must not change until it is done (the Store copies what it would change meanwhile).
 */
export function* buildSnapshotSteps(input: BuildInput, options: BuildOptions): Generator<void, BuildResult> {
  const memo = input.previous?.memo ?? null
  const same =
    memo !== null && memo.fromObjects.input === input.objects && !memo.fromObjects.claim.taken ? memo.fromObjects : null
  // The same objects: this build takes the previous one's derivations over (a fresh claim for the next build).
  const om = same ? { ...same, claim: { taken: false } } : yield* deriveFromObjects(input, options, memo)
  const { g, alloc, lbAlloc } = om
  if (!same) yield
  const pods = podStates(g.pods, input.health, memo?.pods ?? null)
  const podsByNamespace = new Map<string, PodState[]>()
  for (const ps of pods) {
    let list = podsByNamespace.get(ps.pod.meta.namespace)
    if (!list) podsByNamespace.set(ps.pod.meta.namespace, (list = []))
    list.push(ps)
  }
  const ejections = ejectionsByService(input.ejected)

  const serviceAt = (s: Service, old: ServiceMemo | undefined): ServiceMemo => {
    const key = keyOf(s)
    const a = alloc.get(key)
    const lb = lbAlloc.get(key)
    const selector = s.spec.type !== 'ExternalName' && s.spec.selector !== null
    const nsPods = selector ? (podsByNamespace.get(s.meta.namespace) ?? []) : null
    const slices = om.slicesByService.get(key) ?? null
    const endpoints = om.endpointsByKey.get(key) ?? null
    const zonesKey = selector ? om.zonesText : ''
    const ejected = ejections.get(key) ?? ''
    if (
      old &&
      old.service === s &&
      old.alloc === a &&
      old.lb === lb &&
      old.endpoints === endpoints &&
      old.zones === zonesKey &&
      old.ejected === ejected &&
      sameRefs(old.slices, slices) &&
      sameRefs(old.pods, nsPods)
    ) {
      return old
    }
    const state = deriveService(s, key, a, lb, {
      pods: nsPods,
      slices,
      endpoints,
      zones: om.zones,
      ejected: input.ejected,
    })
    return { state, service: s, slices, endpoints, alloc: a, lb, pods: nsPods, zones: zonesKey, ejected }
  }

  let serviceMemos: Map<string, ServiceMemo>
  let services: ServiceState[]
  let changedServices: Set<string> | null = null
  if (same !== null && memo !== null) {
    // The same objects: only the Services a Pod verdict or an ejection reaches can differ.
    const touched = new Set<number>()
    const namespaces = new Set<string>([...podsByNamespace.keys(), ...memo.podsByNamespace.keys()])
    for (const ns of namespaces) {
      if (sameRefs(podsByNamespace.get(ns) ?? null, memo.podsByNamespace.get(ns) ?? null)) continue
      for (const i of same.selectorServices.get(ns) ?? []) touched.add(i)
    }
    const touch = (key: string) => {
      const i = same.positions.get(key)
      if (i !== undefined) touched.add(i)
    }
    for (const [k, v] of ejections) if (memo.ejections.get(k) !== v) touch(k)
    for (const k of memo.ejections.keys()) if (!ejections.has(k)) touch(k)
    serviceMemos = memo.services as Map<string, ServiceMemo>
    services = memo.serviceList as ServiceState[]
    changedServices = new Set()
    let copied = false
    for (const i of touched) {
      const s = g.services[i]!
      const key = keyOf(s)
      const old = memo.services.get(key)
      const next = serviceAt(s, old)
      if (next === old) continue
      if (!copied) {
        // On first write: the Service memos change in place (the previous build's are claimed); the list is copied,
        // as the previous Snapshot publishes it.
        same.claim.taken = true
        services = [...memo.serviceList]
        copied = true
      }
      serviceMemos.set(key, next)
      services[i] = next.state
      if (next.state !== old?.state) changedServices.add(key)
    }
  } else {
    serviceMemos = new Map<string, ServiceMemo>()
    services = []
    // What changed, found on the way instead of by comparing the lists afterwards.
    const changed = new Set<string>()
    let carried = 0
    let step = 0
    for (const s of g.services) {
      if (++step % STEP_ITEMS === 0) yield
      const key = keyOf(s)
      const old = memo?.services.get(key)
      const m = serviceAt(s, old)
      services.push(m.state)
      serviceMemos.set(key, m)
      if (old === undefined) changed.add(key)
      else {
        carried++
        if (old.state !== m.state) changed.add(key)
      }
    }
    // Two Services with one key (an error elsewhere) make the counts meaningless: the lists are compared instead.
    if (memo && serviceMemos.size === g.services.length) {
      if (memo.services.size !== carried) for (const k of memo.services.keys()) if (!serviceMemos.has(k)) changed.add(k)
      changedServices = changed
    }
  }

  const namespaceCounts = om.namespaceCounts
  const namespaces = same && memo ? memo.namespaces : sameList([...namespaceCounts.keys()].sort(), memo?.namespaces)

  const ejected: Record<string, string> = {}
  for (const [k, v] of input.ejected) ejected[k] = v
  const nodeLiveness: Record<string, boolean> = {}
  for (const [k, v] of input.nodeLiveness ?? []) if (k !== options.nodeName) nodeLiveness[k] = v

  let lists = {} as Record<keyof ByKind, readonly unknown[]>
  if (same && memo) lists = memo.lists
  else for (const k of Object.keys(g) as (keyof ByKind)[]) lists[k] = sameList(g[k] as unknown[], memo?.lists[k])
  const serviceList = sameList(services, memo?.serviceList)
  const podList = sameList(pods, memo?.podList)

  let changes: SnapshotChanges | undefined
  if (memo) {
    if (changedServices === null) {
      changedServices = new Set<string>()
      keysOf(serviceList, memo.serviceList, (x) => x.key, changedServices)
    }
    const changedPods = new Set<string>()
    keysOf(podList, memo.podList, (x) => x.key, changedPods)
    const changedIngresses = new Set<string>()
    keysOf(lists.ingresses as Ingress[], memo.lists.ingresses as Ingress[], keyOf, changedIngresses)
    const other =
      namespaces !== memo.namespaces ||
      (['ingressClasses', 'secrets', 'nodes', 'pools', 'l2'] as const).some((k) => lists[k] !== memo.lists[k])
    changes = { services: changedServices, pods: changedPods, ingresses: changedIngresses, other }
  }

  const snapshot: Snapshot = {
    version: input.version,
    builtAt: Date.now(),
    nodeName: options.nodeName,
    objects: input.objects,
    services: serviceList,
    pods: podList,
    nodes: lists.nodes as Node[],
    ingresses: lists.ingresses as Ingress[],
    ingressClasses: lists.ingressClasses as IngressClass[],
    secrets: lists.secrets as Secret[],
    pools: lists.pools as IPAddressPool[],
    l2Advertisements: lists.l2 as L2Advertisement[],
    namespaces,
    errors: input.errors,
    ejected,
    nodeLiveness,
    liveNodes: input.liveNodes ?? null,
    ...(changes ? { changes } : {}),
  }
  const podMemos = new Map<string, PodState>()
  for (const ps of pods) podMemos.set(ps.key, ps)
  return {
    snapshot,
    allocations: {
      services: alloc,
      loadBalancers: lbAlloc,
      memo: {
        fromObjects: om,
        podsByNamespace,
        ejections,
        objects: om.interned,
        pods: podMemos,
        services: serviceMemos,
        lists,
        serviceList,
        podList,
        namespaces,
        namespaceCounts,
      },
    },
  }
}
