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
import { allocateAddresses, type AllocationMap, type ServiceAllocation } from './allocate.ts'
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
  readonly objects: ReadonlyMap<string, KubeObject>
  readonly pods: ReadonlyMap<string, PodState>
  readonly services: ReadonlyMap<string, ServiceMemo>
  readonly lists: Readonly<Record<keyof ByKind, readonly unknown[]>>
  readonly serviceList: readonly ServiceState[]
  readonly podList: readonly PodState[]
  readonly namespaces: readonly string[]
  readonly namespaceCounts: ReadonlyMap<string, number>
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

/**
 * Groups by kind, sorted by key, each object replaced by the previous build's when equal: a reload that parsed a file
 * again gives back the same objects for what did not change. `interned` receives kind|key → object.
 */
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
 * again gives back the same objects for what did not change. `interned` receives kind|key → object. A kind whose
 * keys are the previous build's keeps that order without sorting again.
 */
function groupByKind(
  objects: readonly KubeObject[],
  memo: BuildMemo | null,
  interned: Map<string, KubeObject>,
): ByKind {
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
  /** Kinds that gained an object whose key the previous build did not have. */
  const grown = new Set<keyof ByKind>()
  for (const raw of objects) {
    const id = idOf(raw)
    const prev = previous?.get(id)
    const o = prev !== undefined && (prev === raw || sameData(prev, raw)) ? prev : raw
    interned.set(id, o)
    const kind = KINDS[o.kind]
    if (kind === null) continue
    if (kind === undefined) throw new Error(`unhandled kind ${o.kind}`)
    ;(g[kind] as KubeObject[]).push(o)
    if (prev === undefined) grown.add(kind)
  }
  for (const kind of Object.keys(g) as (keyof ByKind)[]) {
    const list = g[kind] as KubeObject[]
    const before = memo?.lists[kind] as readonly KubeObject[] | undefined
    if (before && !grown.has(kind) && before.length === list.length) {
      // Same keys as before (none new, none gone): the previous order, with each object's current version.
      for (let i = 0; i < before.length; i++) list[i] = interned.get(idOf(before[i]!))!
      continue
    }
    list.sort(byKey)
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
function countNamespaces(interned: ReadonlyMap<string, KubeObject>, memo: BuildMemo | null): Map<string, number> {
  const counts = new Map<string, number>(memo?.namespaceCounts ?? [])
  const bump = (ns: string, by: number) => {
    if (!ns) return
    const n = (counts.get(ns) ?? 0) + by
    if (n === 0) counts.delete(ns)
    else counts.set(ns, n)
  }
  const before = memo?.objects
  for (const [id, o] of interned) if (!before?.has(id)) bump(o.meta.namespace, 1)
  if (before) for (const [id, o] of before) if (!interned.has(id)) bump(o.meta.namespace, -1)
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

export function buildSnapshot(
  input: BuildInput,
  options: BuildOptions,
): { snapshot: Snapshot; allocations: AllocationState } {
  const memo = input.previous?.memo ?? null
  const interned = new Map<string, KubeObject>()
  const g = groupByKind(input.objects, memo, interned)
  const pods = podStates(g.pods, input.health, memo?.pods ?? null)
  const zones = new Map<string, string>()
  for (const n of g.nodes) if (n.zone) zones.set(n.meta.name, n.zone)
  const zonesText = [...zones].join(';')

  const alloc = allocateAddresses(g.services, options.serviceCidrs, input.previous?.services ?? null)
  const lbAlloc = allocateLoadBalancers(g.services, g.pools, input.previous?.loadBalancers ?? null)

  const slicesByService = new Map<string, EndpointSlice[]>()
  for (const sl of g.slices) {
    if (!sl.serviceName) continue
    const key = `${sl.meta.namespace}/${sl.serviceName}`
    let list = slicesByService.get(key)
    if (!list) slicesByService.set(key, (list = []))
    list.push(sl)
  }
  const endpointsByKey = new Map<string, Endpoints>()
  for (const e of g.endpoints) endpointsByKey.set(keyOf(e), e)
  const podsByNamespace = new Map<string, PodState[]>()
  for (const ps of pods) {
    let list = podsByNamespace.get(ps.pod.meta.namespace)
    if (!list) podsByNamespace.set(ps.pod.meta.namespace, (list = []))
    list.push(ps)
  }
  const ejections = ejectionsByService(input.ejected)

  const serviceMemos = new Map<string, ServiceMemo>()
  const services: ServiceState[] = []
  for (const s of g.services) {
    const key = keyOf(s)
    const a = alloc.get(key)
    const lb = lbAlloc.get(key)
    const selector = s.spec.type !== 'ExternalName' && s.spec.selector !== null
    const nsPods = selector ? (podsByNamespace.get(s.meta.namespace) ?? []) : null
    const slices = slicesByService.get(key) ?? null
    const endpoints = endpointsByKey.get(key) ?? null
    const zonesKey = selector ? zonesText : ''
    const ejected = ejections.get(key) ?? ''
    const old = memo?.services.get(key)
    let state: ServiceState
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
      state = old.state
    } else {
      state = deriveService(s, key, a, lb, { pods: nsPods, slices, endpoints, zones, ejected: input.ejected })
    }
    services.push(state)
    serviceMemos.set(key, {
      state,
      service: s,
      slices,
      endpoints,
      alloc: a,
      lb,
      pods: nsPods,
      zones: zonesKey,
      ejected,
    })
  }

  const namespaceCounts = countNamespaces(interned, memo)
  const namespaces = sameList([...namespaceCounts.keys()].sort(), memo?.namespaces)

  const ejected: Record<string, string> = {}
  for (const [k, v] of input.ejected) ejected[k] = v
  const nodeLiveness: Record<string, boolean> = {}
  for (const [k, v] of input.nodeLiveness ?? []) if (k !== options.nodeName) nodeLiveness[k] = v

  const lists = {} as Record<keyof ByKind, readonly unknown[]>
  for (const k of Object.keys(g) as (keyof ByKind)[]) lists[k] = sameList(g[k] as unknown[], memo?.lists[k])
  const serviceList = sameList(services, memo?.serviceList)
  const podList = sameList(pods, memo?.podList)

  let changes: SnapshotChanges | undefined
  if (memo) {
    const changedServices = new Set<string>()
    keysOf(serviceList, memo.serviceList, (x) => x.key, changedServices)
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
        objects: interned,
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
