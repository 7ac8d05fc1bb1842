// The Snapshot: the one state model every plane reads. Built by model/build-snapshot.ts from the validated objects,
// the allocations and the health inputs; published by model/store.ts. Plain data only (structured-cloneable), never
// mutated after publication: planes index it and swap one reference.

import type {
  Ingress,
  IngressClass,
  IPAddressPool,
  KubeObject,
  L2Advertisement,
  Node,
  Pod,
  Protocol,
  Secret,
  Service,
  SourceRef,
} from './objects.ts'
import type { ConfigErrorCode } from './config-errors.ts'

/** One backend address:port of one Service port, with Kubernetes' endpoint conditions (specs/l4-health.md §2.1). */
export interface EndpointState {
  readonly ip: string
  readonly port: number
  readonly ready: boolean
  readonly serving: boolean
  readonly terminating: boolean
  readonly nodeName: string | null
  readonly zone: string | null
  readonly hostname: string | null
  /** "namespace/name" of the Pod behind it, when known (selector or targetRef). */
  readonly pod: string | null
  /** Topology hints; null when the endpoint has none. */
  readonly forNodes: readonly string[] | null
  readonly forZones: readonly string[] | null
}

/** One address of a Service regardless of port: what DNS answers for headless Services and PTR. */
export interface AddressState {
  readonly ip: string
  readonly ready: boolean
  readonly serving: boolean
  readonly terminating: boolean
  readonly hostname: string | null
  readonly nodeName: string | null
  readonly pod: string | null
}

export interface ServicePortState {
  readonly name: string
  readonly protocol: Protocol
  readonly port: number
  readonly targetPort: number | string
  /** Allocated (or as written) for NodePort and LoadBalancer Services; null otherwise. */
  readonly nodePort: number | null
  readonly appProtocol: string | null
  /** Sorted by (ip, port). Pods that lack the named target port are left out (see `ServiceState.warnings`). */
  readonly endpoints: readonly EndpointState[]
}

export interface ServiceState {
  /** "namespace/name" */
  readonly key: string
  readonly namespace: string
  readonly name: string
  readonly service: Service
  readonly headless: boolean
  /** The ClusterIPs DNS answers: as written, or allocated from --service-cidr. Empty for headless and ExternalName. */
  readonly clusterIPs: readonly string[]
  /** LoadBalancer addresses assigned from an IPAddressPool (status.loadBalancer.ingress). */
  readonly loadBalancerIPs: readonly string[]
  /** The pool the LoadBalancer addresses came from. */
  readonly loadBalancerPool: string | null
  /** Why a LoadBalancer Service has no address yet (MetalLB's text), null otherwise. */
  readonly loadBalancerPending: string | null
  /** The LoadBalancer address's pool was removed or shrunk; the address is kept until the Service changes. */
  readonly loadBalancerStale: boolean
  readonly healthCheckNodePort: number | null
  readonly ports: readonly ServicePortState[]
  /** Unique endpoint addresses (any port), sorted by ip. */
  readonly addresses: readonly AddressState[]
  /** Non-fatal problems: a Pod without the named port, an unsupported annotation, an address that clashes. */
  readonly warnings: readonly string[]
}

/** What health/ has decided about a Pod (specs/l4-health.md §6). Absent: no verdict yet. */
export interface PodHealth {
  readonly ready: boolean
  readonly started: boolean
  /** Virtual restarts after liveness or startup failure. */
  readonly restartCount: number
  readonly reason: string | null
}

export interface PodState {
  readonly key: string
  readonly pod: Pod
  /** What endpoints use: the health verdict, or the default when there is none yet. */
  readonly ready: boolean
  readonly health: PodHealth | null
}

export interface ObjectError {
  readonly source: SourceRef | null
  /** "Service default/web", or null when the error is about a whole document or file. */
  readonly object: string | null
  readonly path: string
  /** One of model/config-errors.ts's codes: callers branch on it, never on the message. */
  readonly code: ConfigErrorCode
  readonly message: string
}

/**
 * What changed since the Snapshot before (version - 1), by key (issue 14). Per-Service and per-Pod objects that did not
 * change are the same objects as in that Snapshot (and so are whole lists when none of their elements changed), so a
 * plane may also compare by identity.
 */
export interface SnapshotChanges {
  /** Services added, removed, or whose ServiceState changed (spec, allocation, endpoints, conditions, ejections). */
  readonly services: ReadonlySet<string>
  /** Pods added, removed, or whose PodState changed (object or health verdict). */
  readonly pods: ReadonlySet<string>
  readonly ingresses: ReadonlySet<string>
  /** Namespaces, Nodes, IngressClasses, Secrets, IPAddressPools or L2Advertisements changed. */
  readonly other: boolean
}

export interface Snapshot {
  /** Increases by one with each publication. */
  readonly version: number
  /** Date.now() at build. */
  readonly builtAt: number
  readonly nodeName: string
  readonly objects: readonly KubeObject[]
  /** Sorted by key. */
  readonly services: readonly ServiceState[]
  readonly pods: readonly PodState[]
  readonly nodes: readonly Node[]
  readonly ingresses: readonly Ingress[]
  readonly ingressClasses: readonly IngressClass[]
  readonly secrets: readonly Secret[]
  readonly pools: readonly IPAddressPool[]
  readonly l2Advertisements: readonly L2Advertisement[]
  /** Namespaces holding at least one object (DNS: "namespace known"). */
  readonly namespaces: readonly string[]
  /** Every configuration error currently in force (invalid objects, unreadable files). */
  readonly errors: readonly ObjectError[]
  /** Endpoints taken out by passive ejection: "serviceKey|ip|port" → reason. */
  readonly ejected: Readonly<Record<string, string>>
  /**
   * What membership/ has seen of the other nodes: Node name → alive (its admin /healthz answers). A node not in the
   * record has never been probed and counts as alive (specs/l4-health.md §5.6); --node itself is never in it.
   */
  readonly nodeLiveness: Readonly<Record<string, boolean>>
  /**
   * etcd mode: the nodes whose lease is live (store/node-lease.ts), sorted; --node is in it only while this node holds
   * its own lease. lb/l2-election.ts takes its candidates from here instead of declared Nodes. null in file mode.
   */
  readonly liveNodes?: readonly string[] | null
  /**
   * etcd mode with --vip-mode interface: LoadBalancer address → the node whose claim PREFIX/owners/<ip> holds
   * (store/l2-owners.ts), claimed by transaction on its lease. A node announces an address only while it is both
   * elected and its claim is recorded, so a newly elected node waits until the previous owner has withdrawn and
   * released. Absent otherwise.
   */
  readonly l2Owners?: Readonly<Record<string, string>>
  /** Relative to the Snapshot of version - 1; absent for the first one (everything is new). */
  readonly changes?: SnapshotChanges
}

/**
 * The element of `key` in one of a Snapshot's lists sorted by key (`services`, `pods`), or undefined: a binary search,
 * so a plane applying `changes` looks up what changed without walking the list or indexing it.
 */
export function findByKey<T extends { readonly key: string }>(list: readonly T[], key: string): T | undefined {
  let lo = 0
  let hi = list.length - 1
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1
    const k = list[mid]!.key
    if (k === key) return list[mid]
    if (k < key) lo = mid + 1
    else hi = mid - 1
  }
  return undefined
}

export function ejectionKey(serviceKey: string, ip: string, port: number): string {
  return `${serviceKey}|${ip}|${port}`
}

/**
 * How the L4 and L7 paths report the outcome of talking to an endpoint; health/ implements it (passive ejection).
 * Planes get it at wiring time from bin/, so they never import health/.
 */
export interface UpstreamReporter {
  report(serviceKey: string, ip: string, port: number, ok: boolean): void
}

export const noopReporter: UpstreamReporter = { report() {} }
