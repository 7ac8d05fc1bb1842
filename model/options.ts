// Options every component may read, parsed once by bin/meshlet.ts from flags and MESHLET_* environment variables.
// Each field says its flag, its default and, for numbers, its unit (Caddy's habit); the defaults themselves live in one
// place, DEFAULT_OPTIONS below, which bin/cli-options.ts (flags override it) and the test builders start from, so no
// use site applies a default of its own. test/presubmit.test.ts checks both: every field keeps such a comment and has
// an entry in DEFAULT_OPTIONS, and no production file writes `options.<field> ?? …`.

import { availableParallelism, hostname } from 'node:os'
import { parseCidr, type Cidr } from './ip.ts'

/** host:port to listen on; null when the listener is off. Port 0 lets the kernel choose (tests). */
export interface ListenAddress {
  readonly host: string
  readonly port: number
}

export interface RuntimeOptions {
  /** -f/--file: manifest files, directories or "-" (stdin), watched. Default: none (`up` requires at least one). */
  readonly files: readonly string[]
  /** --node: this node's name, matched against Pods' spec.nodeName and Node objects. Default: the hostname. */
  readonly nodeName: string
  /** --node-address: where NodePorts and health-check node ports listen. Default: null = all addresses. */
  readonly nodeAddress: string | null
  /** --dns: cluster DNS listener, UDP and TCP. Default: 0.0.0.0:53; null = off. */
  readonly dns: ListenAddress | null
  /** --http: Ingress HTTP listener. Default: 0.0.0.0:80; null = off. */
  readonly http: ListenAddress | null
  /** --https: Ingress HTTPS listener. Default: 0.0.0.0:443; null = off. */
  readonly https: ListenAddress | null
  /** --admin: /healthz /readyz /status /metrics. Default: 127.0.0.1:9901; null = off. */
  readonly admin: ListenAddress | null
  /** --upstream: DNS forwarders, "host:port" each. Default: empty = the nameservers of /etc/resolv.conf. */
  readonly upstreams: readonly string[]
  /**
   * --allow-recursion: CIDRs beyond loopback and the node's own networks whose out-of-zone names DNS forwards.
   * Default: empty = loopback and the node's networks only.
   */
  readonly allowRecursion: readonly Cidr[]
  /**
   * --discovery-resolver: where meshlet.io/replicas-from-dns names are resolved, "host:port" each.
   * Default: empty = the nameservers of /etc/resolv.conf.
   */
  readonly discoveryResolvers: readonly string[]
  /** --cluster-domain: the cluster DNS zone, lower case, no trailing dot. Default: cluster.local. */
  readonly clusterDomain: string
  /** --service-cidr: where ClusterIPs are allocated, at most one per family. Default: 127.96.0.0/16. */
  readonly serviceCidrs: readonly Cidr[]
  /** --vip-mode: how Service addresses become reachable (loopback, interface, none). Default: loopback. */
  readonly vipMode: 'loopback' | 'interface' | 'none'
  /** --vip-interface: the interface Service addresses are added to in interface mode. Default: null (required there). */
  readonly vipInterface: string | null
  /** --dns-ttl: TTL of in-zone records, in seconds (0-3600). Default: 5 seconds. */
  readonly dnsTtl: number
  /**
   * --dns-workers: threads serving DNS, a count (1-64): 1 = the main thread, N ≥ 2 = N worker threads sharing the
   * address. Default: 1.
   */
  readonly dnsWorkers: number
  /** --ingress-class: the IngressClass name meshlet serves. Default: meshlet. */
  readonly ingressClass: string
  /** --access-log: one log line per proxied request. Default: false (off; issue 19 measured its cost). */
  readonly accessLog: boolean
  /**
   * --max-connections: client connections per Ingress listener, a count. Default: null = derived from
   * RLIMIT_NOFILE (proxy/limits.ts).
   */
  readonly maxConnections: number | null
  /** --trust-forwarded-from: CIDRs whose X-Forwarded-* headers are trusted. Default: empty = none. */
  readonly trustForwardedFrom: readonly Cidr[]
  /** --exec-prefix: prefix for exec probes, e.g. "docker exec {pod}". Default: null = run commands on this host. */
  readonly execPrefix: string | null
  /** --on-liveness-failure: command run when a liveness probe fails. Default: null = none. */
  readonly onLivenessFailure: string | null
  /** --log-level: pino level (fatal error warn info debug trace silent). Default: info. */
  readonly logLevel: string
  /**
   * --peer-port: the admin port of the other nodes, probed by membership/ unless a Node says meshlet.io/admin-port;
   * a TCP port (1-65535). Default: 9901.
   */
  readonly peerPort: number
  /**
   * --l4-mode: the L4 data plane: userspace (Node listeners), nftables (kernel DNAT, lb/nft.ts) or auto (nftables
   * when `nft` works in meshlet's network namespace, else userspace). Default: auto.
   */
  readonly l4Mode: 'userspace' | 'nftables' | 'auto'
  /**
   * --store etcd://HOST:PORT[,...] with --etcd-prefix, --etcd-cacert, --etcd-cert, --etcd-key: objects, node leases
   * and LoadBalancer elections from etcd (store/README.md). Default: null = --store file, the -f
   * manifests.
   */
  readonly etcd: EtcdOptions | null
  /**
   * --node-lease-seconds: TTL of this node's etcd lease, in seconds (2-3600); etcd mode only. Default: 3 seconds.
   */
  readonly nodeLeaseSeconds: number
  /**
   * --workers: threads serving the http and https Ingress listeners, a count (1-64): 1 = the main thread, N ≥ 2 = N
   * worker threads sharing the ports (SO_REUSEPORT; proxy/workers.ts). Default: os.availableParallelism(), at most 64
   * (nginx's `worker_processes auto`).
   */
  readonly proxyWorkers: number
}

/** Where etcd is (store/client.ts connects). */
export interface EtcdOptions {
  /** "host:port" of each member. */
  readonly endpoints: readonly string[]
  /** Key prefix, leading slash, no trailing slash ("/meshlet"). */
  readonly prefix: string
  /** PEM file paths; null = none. A CA or a client certificate turns TLS on. */
  readonly cacert: string | null
  readonly cert: string | null
  readonly key: string | null
}

/**
 * Every option's default, the one place they live: `meshlet up` starts from it and overrides what a flag or a MESHLET_*
 * variable sets (bin/cli-options.ts); the test builders start from it too. Units are those of the field's comment.
 */
export const DEFAULT_OPTIONS: RuntimeOptions = {
  /** No manifests: `up` requires -f or --store etcd://. */
  files: [],
  /** The machine's hostname, read once at start. */
  nodeName: hostname(),
  /** All addresses (root; bin/cli-options.ts UNPRIVILEGED_DEFAULTS narrows it to 127.0.0.1 for other users). */
  nodeAddress: null,
  /** 0.0.0.0 port 53, UDP and TCP. */
  dns: { host: '0.0.0.0', port: 53 },
  /** 0.0.0.0 port 80. */
  http: { host: '0.0.0.0', port: 80 },
  /** 0.0.0.0 port 443. */
  https: { host: '0.0.0.0', port: 443 },
  /** Loopback only, port 9901: /status tells more than strangers should know. */
  admin: { host: '127.0.0.1', port: 9901 },
  /** Empty = the nameservers of /etc/resolv.conf. */
  upstreams: [],
  /** Empty = loopback and the node's own networks only. */
  allowRecursion: [],
  /** Empty = the nameservers of /etc/resolv.conf. */
  discoveryResolvers: [],
  /** cluster.local, as in Kubernetes. */
  clusterDomain: 'cluster.local',
  /** 127.96.0.0/16: loopback, so ClusterIPs work without root or an interface. */
  serviceCidrs: [parseCidr('127.96.0.0/16')!],
  /** loopback: Service addresses on lo. */
  vipMode: 'loopback',
  /** None; --vip-mode interface requires one. */
  vipInterface: null,
  /** 5 seconds. */
  dnsTtl: 5,
  /** 1 thread: the main thread serves DNS. */
  dnsWorkers: 1,
  /** meshlet. */
  ingressClass: 'meshlet',
  /** Off: +18 to +66 µs of CPU per proxied request with it on (issue 19). */
  accessLog: false,
  /** null = a count derived from RLIMIT_NOFILE (proxy/limits.ts). */
  maxConnections: null,
  /** Empty = X-Forwarded-* trusted from nobody. */
  trustForwardedFrom: [],
  /** null = exec probes run on this host. */
  execPrefix: null,
  /** null = no command. */
  onLivenessFailure: null,
  /** info. */
  logLevel: 'info',
  /** Port 9901, the default --admin port. */
  peerPort: 9901,
  /** auto: nftables when `nft` works here, else userspace. */
  l4Mode: 'auto',
  /** null = --store file (the -f manifests). */
  etcd: null,
  /** 3 seconds. */
  nodeLeaseSeconds: 3,
  /** Every core the process may use, as nginx's `worker_processes auto` (issue 16). */
  proxyWorkers: Math.min(64, availableParallelism()),
}
