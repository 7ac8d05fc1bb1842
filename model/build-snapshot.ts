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
} from './snapshot.ts'
import { ejectionKey } from './snapshot.ts'
import { allocateAddresses, type AllocationMap } from './allocate.ts'
import { allocateLoadBalancers, type LoadBalancerAllocationMap } from './lb-allocator.ts'
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
}

export interface BuildInput {
  readonly version: number
  readonly objects: readonly KubeObject[]
  readonly errors: readonly ObjectError[]
  readonly health: ReadonlyMap<string, PodHealth>
  readonly ejected: ReadonlyMap<string, string>
  /** Node name → alive, from membership/; absent in older callers = nothing known. */
  readonly nodeLiveness?: ReadonlyMap<string, boolean>
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

function groupByKind(objects: readonly KubeObject[]): ByKind {
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
  for (const o of objects) {
    switch (o.kind) {
      case 'Service':
        g.services.push(o)
        break
      case 'Pod':
        g.pods.push(o)
        break
      case 'Endpoints':
        g.endpoints.push(o)
        break
      case 'EndpointSlice':
        g.slices.push(o)
        break
      case 'Ingress':
        g.ingresses.push(o)
        break
      case 'IngressClass':
        g.ingressClasses.push(o)
        break
      case 'Secret':
        g.secrets.push(o)
        break
      case 'Node':
        g.nodes.push(o)
        break
      case 'IPAddressPool':
        g.pools.push(o)
        break
      case 'L2Advertisement':
        g.l2.push(o)
        break
      // Its replicas arrive as Pods made by config/dns-discovery.ts; the Deployment itself derives nothing here.
      case 'Deployment':
        break
      default: {
        const never: never = o
        throw new Error(`unhandled kind ${(never as KubeObject).kind}`)
      }
    }
  }
  const byKey = <T extends { meta: { namespace: string; name: string } }>(a: T, b: T) =>
    objectKey(a.meta) < objectKey(b.meta) ? -1 : objectKey(a.meta) > objectKey(b.meta) ? 1 : 0
  for (const list of Object.values(g) as { meta: { namespace: string; name: string } }[][]) list.sort(byKey)
  return g
}

/** A Pod with a readiness or startup probe starts not ready; one without is ready as soon as it is loaded. */
export function podHasGatingProbe(pod: Pod): boolean {
  return pod.spec.containers.some((c) => c.readinessProbe !== null || c.startupProbe !== null)
}

function podStates(pods: readonly Pod[], health: ReadonlyMap<string, PodHealth>): PodState[] {
  return pods.map((pod) => {
    const key = objectKey(pod.meta)
    const h = health.get(key) ?? null
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

export function buildSnapshot(
  input: BuildInput,
  options: BuildOptions,
): { snapshot: Snapshot; allocations: AllocationState } {
  const g = groupByKind(input.objects)
  const pods = podStates(g.pods, input.health)
  const zones = new Map<string, string>()
  for (const n of g.nodes) if (n.zone) zones.set(n.meta.name, n.zone)

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
  for (const e of g.endpoints) endpointsByKey.set(objectKey(e.meta), e)

  const services: ServiceState[] = []
  for (const s of g.services) {
    const key = objectKey(s.meta)
    const a = alloc.get(key)
    const lb = lbAlloc.get(key)
    const warnings: string[] = [...(a?.errors ?? [])]
    const clusterIPs = a?.clusterIPs ?? []
    let derived: { perPort: EndpointState[][]; addresses: AddressState[] }
    if (s.spec.type === 'ExternalName') derived = { perPort: s.spec.ports.map(() => []), addresses: [] }
    else if (s.spec.selector) derived = endpointsFromPods(s, pods, clusterIPs, zones, warnings)
    else if (slicesByService.has(key)) derived = endpointsFromSlices(s, slicesByService.get(key)!)
    else if (endpointsByKey.has(key)) derived = endpointsFromEndpoints(s, endpointsByKey.get(key)!)
    else derived = { perPort: s.spec.ports.map(() => []), addresses: [] }

    const ports: ServicePortState[] = s.spec.ports.map((p, i) => ({
      name: p.name,
      protocol: p.protocol,
      port: p.port,
      targetPort: p.targetPort,
      nodePort: a?.nodePorts[i] ?? null,
      appProtocol: p.appProtocol,
      endpoints: applyEjections(key, dedupeEndpoints(derived.perPort[i] ?? []), input.ejected),
    }))
    if (s.meta.annotations['service.kubernetes.io/topology-mode'] === 'Auto') {
      warnings.push('service.kubernetes.io/topology-mode: Auto (proportional hints) is not supported; hints are off')
    }
    services.push({
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
    })
  }

  const namespaces = new Set<string>()
  for (const o of input.objects) if (o.meta.namespace) namespaces.add(o.meta.namespace)

  const ejected: Record<string, string> = {}
  for (const [k, v] of input.ejected) ejected[k] = v
  const nodeLiveness: Record<string, boolean> = {}
  for (const [k, v] of input.nodeLiveness ?? []) if (k !== options.nodeName) nodeLiveness[k] = v

  const snapshot: Snapshot = {
    version: input.version,
    builtAt: Date.now(),
    nodeName: options.nodeName,
    objects: input.objects,
    services,
    pods,
    nodes: g.nodes,
    ingresses: g.ingresses,
    ingressClasses: g.ingressClasses,
    secrets: g.secrets,
    pools: g.pools,
    l2Advertisements: g.l2,
    namespaces: [...namespaces].sort(),
    errors: input.errors,
    ejected,
    nodeLiveness,
  }
  return { snapshot, allocations: { services: alloc, loadBalancers: lbAlloc } }
}
