// Options every component may read, parsed once by bin/meshlet.ts from flags and MESHLET_* environment variables.

import type { Cidr } from './ip.ts'

/** host:port to listen on; null when the listener is off. Port 0 lets the kernel choose (tests). */
export interface ListenAddress {
  readonly host: string
  readonly port: number
}

export interface RuntimeOptions {
  readonly files: readonly string[]
  readonly nodeName: string
  /** --node-address: where NodePorts and health-check node ports listen; null = all addresses. */
  readonly nodeAddress: string | null
  readonly dns: ListenAddress | null
  readonly http: ListenAddress | null
  readonly https: ListenAddress | null
  readonly admin: ListenAddress | null
  /** --upstream, "host:port" each; empty = nameservers of /etc/resolv.conf. */
  readonly upstreams: readonly string[]
  /** --discovery-resolver, "host:port" each: where meshlet.io/replicas-from-dns names are resolved; empty = /etc/resolv.conf. */
  readonly discoveryResolvers?: readonly string[]
  readonly clusterDomain: string
  readonly serviceCidrs: readonly Cidr[]
  readonly vipMode: 'loopback' | 'interface' | 'none'
  readonly vipInterface: string | null
  readonly dnsTtl: number
  /** --dns-workers: threads serving DNS; 1 (default, also when absent) = the main thread, N ≥ 2 = N worker threads. */
  readonly dnsWorkers?: number
  readonly ingressClass: string
  readonly accessLog: boolean
  /** --max-connections: client connections per Ingress listener; null/absent = derived from RLIMIT_NOFILE (proxy/limits.ts). */
  readonly maxConnections?: number | null
  /** CIDRs whose X-Forwarded-* headers are trusted. */
  readonly trustForwardedFrom: readonly Cidr[]
  /** Prefix for exec probes, e.g. "docker exec {pod}"; null runs commands on this host. */
  readonly execPrefix: string | null
  /** Command run when a liveness probe fails; null = none. */
  readonly onLivenessFailure: string | null
  readonly logLevel: string
  /** --peer-port: the admin port of the other nodes, probed by membership/ unless a Node says meshlet.io/admin-port; default 9901. */
  readonly peerPort?: number
}
