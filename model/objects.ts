// Typed, validated Kubernetes objects: what model/validate.ts produces from a manifest document.
// Only the fields meshlet honours are kept ("only the items we need", as CoreDNS object/ does); every field is set,
// null or empty when absent, so objects have stable shapes. All of it is plain data (structured-cloneable).

/** Where an object came from, for error messages and /status. `doc` is the 1-based document index in the file, as error messages print it ("web.yaml doc 2"). */
export interface SourceRef {
  readonly file: string
  readonly doc: number
}

export interface ObjectMeta {
  readonly name: string
  /** "default" when the manifest leaves it out; "" for cluster-scoped kinds (Node, IngressClass). */
  readonly namespace: string
  readonly labels: Readonly<Record<string, string>>
  readonly annotations: Readonly<Record<string, string>>
  /** Set when the object is terminating (Pods: endpoints become terminating). */
  readonly deletionTimestamp: string | null
  readonly source: SourceRef
}

export type Protocol = 'TCP' | 'UDP' | 'SCTP'
export type IPFamily = 'IPv4' | 'IPv6'

// ---------------------------------------------------------------- Service

export interface ServicePort {
  /** "" only when the Service has a single port, as the API server allows. */
  readonly name: string
  readonly protocol: Protocol
  readonly port: number
  /** Number, or an IANA_SVC_NAME resolved per Pod against container port names. Defaults to `port`. */
  readonly targetPort: number | string
  /** As written; model/allocate.ts fills in the allocated one in the Snapshot. */
  readonly nodePort: number | null
  readonly appProtocol: string | null
}

export type ServiceType = 'ClusterIP' | 'NodePort' | 'LoadBalancer' | 'ExternalName'

export interface ServiceSpec {
  readonly type: ServiceType
  /** null: no selector (endpoints come from Endpoints/EndpointSlices). An empty selector is also null, as in Kubernetes. */
  readonly selector: Readonly<Record<string, string>> | null
  /** As written: an address, "None" (headless) or null (allocate). `clusterIPs` wins when both are given. */
  readonly clusterIPs: readonly string[]
  readonly headless: boolean
  readonly ipFamilies: readonly IPFamily[]
  readonly ipFamilyPolicy: 'SingleStack' | 'PreferDualStack' | 'RequireDualStack'
  readonly ports: readonly ServicePort[]
  readonly externalName: string | null
  readonly externalIPs: readonly string[]
  readonly sessionAffinity: 'None' | 'ClientIP'
  /** sessionAffinityConfig.clientIP.timeoutSeconds, default 10800, 1..86400. */
  readonly affinityTimeoutSeconds: number
  readonly externalTrafficPolicy: 'Cluster' | 'Local'
  readonly internalTrafficPolicy: 'Cluster' | 'Local'
  /** PreferClose | PreferSameZone | PreferSameNode, or null. */
  readonly trafficDistribution: string | null
  readonly publishNotReadyAddresses: boolean
  readonly healthCheckNodePort: number | null
  readonly loadBalancerIP: string | null
  readonly loadBalancerClass: string | null
}

export interface Service {
  readonly kind: 'Service'
  readonly meta: ObjectMeta
  readonly spec: ServiceSpec
}

// ---------------------------------------------------------------- Pod

export interface ContainerPort {
  readonly name: string | null
  readonly containerPort: number
  readonly protocol: Protocol
}

export interface HttpHeader {
  readonly name: string
  readonly value: string
}

export type ProbeHandler =
  | {
      readonly type: 'httpGet'
      readonly scheme: 'HTTP' | 'HTTPS'
      /** null: the Pod IP. */
      readonly host: string | null
      readonly path: string
      /** Resolved to a number during validation (named ports against the container's ports). */
      readonly port: number
      readonly httpHeaders: readonly HttpHeader[]
    }
  | { readonly type: 'tcpSocket'; readonly host: string | null; readonly port: number }
  | { readonly type: 'exec'; readonly command: readonly string[] }
  | { readonly type: 'grpc'; readonly port: number; readonly service: string }

export interface Probe {
  readonly handler: ProbeHandler
  /** Seconds; kubelet defaults: 0, 10, 1, 1, 3. */
  readonly initialDelaySeconds: number
  readonly periodSeconds: number
  readonly timeoutSeconds: number
  readonly successThreshold: number
  readonly failureThreshold: number
}

export interface Container {
  readonly name: string
  readonly ports: readonly ContainerPort[]
  readonly readinessProbe: Probe | null
  readonly livenessProbe: Probe | null
  readonly startupProbe: Probe | null
}

export interface Pod {
  readonly kind: 'Pod'
  readonly meta: ObjectMeta
  readonly spec: {
    readonly nodeName: string | null
    readonly hostname: string | null
    readonly subdomain: string | null
    readonly containers: readonly Container[]
  }
  readonly status: {
    /** null: the Pod has no address and no endpoints. */
    readonly podIP: string | null
    /** Every address, podIP first. */
    readonly podIPs: readonly string[]
  }
}

// ---------------------------------------------------------------- Endpoints, EndpointSlice

export interface EndpointPort {
  readonly name: string
  readonly port: number
  readonly protocol: Protocol
  readonly appProtocol: string | null
}

export interface TargetRef {
  readonly kind: string
  readonly namespace: string
  readonly name: string
}

export interface EndpointsAddress {
  readonly ip: string
  readonly hostname: string | null
  readonly nodeName: string | null
  readonly targetRef: TargetRef | null
}

export interface Endpoints {
  readonly kind: 'Endpoints'
  readonly meta: ObjectMeta
  readonly subsets: readonly {
    readonly addresses: readonly EndpointsAddress[]
    readonly notReadyAddresses: readonly EndpointsAddress[]
    readonly ports: readonly EndpointPort[]
  }[]
}

export interface SliceEndpoint {
  readonly addresses: readonly string[]
  /** null: the field was absent (Kubernetes then reads ready/serving as true, terminating as false). */
  readonly conditions: {
    readonly ready: boolean | null
    readonly serving: boolean | null
    readonly terminating: boolean | null
  }
  readonly hostname: string | null
  readonly nodeName: string | null
  readonly zone: string | null
  readonly hints: { readonly forZones: readonly string[]; readonly forNodes: readonly string[] } | null
  readonly targetRef: TargetRef | null
}

export interface EndpointSlice {
  readonly kind: 'EndpointSlice'
  readonly meta: ObjectMeta
  readonly addressType: 'IPv4' | 'IPv6' | 'FQDN'
  /** From the `kubernetes.io/service-name` label; null when absent (the slice then belongs to no Service). */
  readonly serviceName: string | null
  readonly endpoints: readonly SliceEndpoint[]
  readonly ports: readonly EndpointPort[]
}

// ---------------------------------------------------------------- Ingress

export interface IngressServiceBackend {
  readonly service: {
    readonly name: string
    readonly port: { readonly number: number | null; readonly name: string | null }
  }
}

export type PathType = 'Exact' | 'Prefix' | 'ImplementationSpecific'

export interface IngressPath {
  readonly path: string
  readonly pathType: PathType
  readonly backend: IngressServiceBackend
}

export interface IngressRule {
  /** null: every host. May be a one-label wildcard ("*.example.com"). */
  readonly host: string | null
  readonly paths: readonly IngressPath[]
}

export interface Ingress {
  readonly kind: 'Ingress'
  readonly meta: ObjectMeta
  readonly spec: {
    /** spec.ingressClassName, or the deprecated kubernetes.io/ingress.class annotation; null when neither. */
    readonly ingressClassName: string | null
    readonly defaultBackend: IngressServiceBackend | null
    readonly tls: readonly { readonly hosts: readonly string[]; readonly secretName: string | null }[]
    readonly rules: readonly IngressRule[]
  }
}

export interface IngressClass {
  readonly kind: 'IngressClass'
  readonly meta: ObjectMeta
  readonly controller: string
  /** Annotation ingressclass.kubernetes.io/is-default-class: "true". */
  readonly isDefault: boolean
}

// ---------------------------------------------------------------- Secret, Node, MetalLB

export interface Secret {
  readonly kind: 'Secret'
  readonly meta: ObjectMeta
  readonly type: string
  /** PEM text of tls.crt and tls.key (decoded from base64 `data`, or from `stringData`); null for other types. */
  readonly tls: { readonly cert: string; readonly key: string } | null
}

export interface Node {
  readonly kind: 'Node'
  readonly meta: ObjectMeta
  readonly addresses: readonly { readonly type: string; readonly address: string }[]
  /** The topology.kubernetes.io/zone label. */
  readonly zone: string | null
  /** status.conditions Ready: true/false ("True"/"False"), null when the Node carries no Ready condition (or "Unknown"). */
  readonly ready: boolean | null
}

export interface IPAddressPool {
  readonly kind: 'IPAddressPool'
  readonly meta: ObjectMeta
  /** CIDRs ("198.18.10.0/24") and ranges ("198.18.10.5-198.18.10.9") as written. */
  readonly addresses: readonly string[]
  readonly autoAssign: boolean
  readonly avoidBuggyIPs: boolean
  readonly serviceAllocation: {
    readonly priority: number | null
    readonly namespaces: readonly string[]
    readonly namespaceSelectors: readonly LabelSelector[]
    readonly serviceSelectors: readonly LabelSelector[]
  } | null
}

export interface L2Advertisement {
  readonly kind: 'L2Advertisement'
  readonly meta: ObjectMeta
  /** Empty with no selectors: every pool. */
  readonly ipAddressPools: readonly string[]
  readonly ipAddressPoolSelectors: readonly LabelSelector[]
  readonly nodeSelectors: readonly LabelSelector[]
  readonly interfaces: readonly string[]
}

export interface LabelSelector {
  readonly matchLabels: Readonly<Record<string, string>>
  readonly matchExpressions: readonly {
    readonly key: string
    readonly operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist'
    readonly values: readonly string[]
  }[]
}

// ---------------------------------------------------------------- Deployment (replicas discovered through DNS)

/**
 * An apps/v1 Deployment that meshlet manages: one carrying the `meshlet.io/replicas-from-dns` annotation (a Deployment
 * without it is an ignored kind). Its replicas are not started by meshlet: config/dns-discovery.ts resolves `dnsName`
 * (Docker's embedded DNS answers a Compose service name with every replica's address) and makes one Pod per address
 * from the template.
 */
export interface Deployment {
  readonly kind: 'Deployment'
  readonly meta: ObjectMeta
  readonly spec: {
    /** As written (informational: Compose decides how many replicas run); null when absent. */
    readonly replicas: number | null
    readonly selector: LabelSelector
    readonly template: {
      readonly labels: Readonly<Record<string, string>>
      readonly annotations: Readonly<Record<string, string>>
      readonly spec: Pod['spec']
    }
  }
  readonly discovery: {
    /** Annotation meshlet.io/replicas-from-dns: the name whose A/AAAA records are the replicas. */
    readonly dnsName: string
    /** Annotation meshlet.io/resolve-interval-seconds: how often the name is re-resolved, 1-3600, default 5. */
    readonly intervalSeconds: number
  }
}

export type KubeObject =
  | Service
  | Pod
  | Endpoints
  | EndpointSlice
  | Ingress
  | IngressClass
  | Secret
  | Node
  | IPAddressPool
  | L2Advertisement
  | Deployment

export type Kind = KubeObject['kind']

/** "namespace/name", or "name" for cluster-scoped objects. */
export function objectKey(meta: { readonly namespace: string; readonly name: string }): string {
  return meta.namespace === '' ? meta.name : `${meta.namespace}/${meta.name}`
}
