// The shape of admin's /status JSON as the tests read it. admin/ builds the body from plain objects and types it
// `unknown` (planes own their own status), so the tests describe here what they rely on — a field renamed in admin/
// or a plane then fails `tsc` in one place instead of reading `undefined` through `any` in thirty.

import type { SourceStatus } from '../../config/watch.ts'
import type { PoolUsage } from '../../lb/pool-usage.ts'
import type { ObjectError } from '../../model/snapshot.ts'
import type { IngressStatus, RouteStatus } from '../../proxy/routes/route-table.ts'
import type { HealthStatus } from '../../health/index.ts'
import type { MembershipStatus } from '../../membership/index.ts'
import type { StoreStatus } from '../../store/source.ts'

export interface EndpointJson {
  readonly ip: string
  readonly port: number
  readonly ready: boolean
  readonly serving: boolean
  readonly terminating: boolean
  readonly nodeName?: string | null
  readonly pod?: string | null
  readonly ejected?: unknown
}

export interface ServicePortJson {
  readonly name: string
  readonly protocol: string
  readonly port: number
  readonly targetPort: number | string
  readonly nodePort: number | null
  readonly endpoints: readonly EndpointJson[]
}

export interface ServiceJson {
  readonly key: string
  readonly type: string
  readonly headless: boolean
  readonly clusterIPs: readonly string[]
  readonly externalName?: string
  readonly loadBalancerIPs: readonly string[]
  readonly loadBalancerPool: string | null
  readonly loadBalancerPending: string | null
  readonly loadBalancerStale?: boolean
  readonly healthCheckNodePort: number | null
  readonly ports: readonly ServicePortJson[]
  readonly warnings: readonly string[]
}

export interface PodJson {
  readonly key: string
  readonly ip: string | null
  readonly node: string | null
  readonly ready: boolean
  readonly health: unknown
}

export interface SnapshotJson {
  readonly version: number
  readonly objects: Readonly<Record<string, number>>
  readonly errors: readonly ObjectError[]
  readonly services: readonly ServiceJson[]
  readonly pods: readonly PodJson[]
}

/** lb's status: one entry per Service port, with the listeners serving it. */
export interface LbListenerJson {
  readonly protocol: string
  readonly address: string
  readonly port: number
  readonly kind: string
  readonly state: string
  readonly error?: string
  /** lb/errors.ts code of `error` (MLT_LB_BIND, MLT_LB_VIP_INTERFACE). */
  readonly code?: string | null
  readonly connections?: number
  readonly flows?: number
  /** Client connections reset because no endpoint could be dialled. */
  readonly refused?: { readonly code: string; readonly count: number; readonly last: string }
}

export interface LbPortJson {
  readonly port: string | number
  readonly protocol: string
  readonly usable: { readonly cluster: number; readonly local: number }
  readonly affinityEntries: number | null
  readonly listeners: readonly LbListenerJson[]
}

export interface LbStatusJson {
  readonly vipMode: string
  readonly interfaceAddresses: readonly string[] | null
  readonly services: Readonly<Record<string, readonly LbPortJson[]>>
  readonly pools: readonly PoolUsage[]
}

export interface DnsStatusJson {
  readonly ready: boolean
  readonly listeners: readonly { readonly address: string; readonly port: number }[]
  readonly names: number
  readonly workers: readonly { readonly worker: number; readonly listening: boolean }[] | null
  readonly upstreams: readonly { readonly address: string; readonly state: string }[]
}

/** proxy's status (its plane types it `unknown`; the tests read these fields). */
export interface ProxyStatusJson {
  readonly listeners: Readonly<
    Record<
      string,
      | {
          readonly state: string
          readonly address: string
          readonly port: number
          readonly connections: { readonly open: number; readonly closedForRoom: number; readonly refused: number }
        }
      | undefined
    >
  >
  readonly ingresses: readonly IngressStatus[]
  readonly routes: readonly RouteStatus[]
  /** Requests answered before a route was chosen, by proxy/errors.ts code. */
  readonly unrouted: Readonly<Record<string, number>>
  readonly tunnels: number
  readonly inflight: number
}

export interface StatusJson {
  readonly meshlet: { readonly version: string; readonly node: string; readonly ready: boolean }
  /** The file provider's status, plus Compose discovery's when bin/ wires it. */
  readonly config: SourceStatus & { readonly discovery?: unknown }
  readonly snapshot: SnapshotJson
  readonly planes: {
    readonly dns?: DnsStatusJson
    readonly proxy?: ProxyStatusJson
    readonly lb?: LbStatusJson
    readonly health?: HealthStatus
    readonly membership?: MembershipStatus
    /** etcd mode only (store/source.ts). */
    readonly store?: StoreStatus
  }
}

/** The Snapshot view of one Service, undefined until it is there. */
export function serviceOf(status: StatusJson | null | undefined, key: string): ServiceJson | undefined {
  return status?.snapshot?.services?.find((s) => s.key === key)
}
