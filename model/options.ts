// Options every component may read, parsed once by bin/meshlet.ts from flags and MESHLET_* environment variables.
// Each field says its flag, its default and, for numbers, its unit (Caddy's habit); the defaults themselves are applied
// in one place, bin/cli-options.ts (UP_FLAGS and runtimeOptions). test/presubmit.test.ts checks that every field keeps
// such a comment.

import type { Cidr } from './ip.ts'

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
   * Default: empty (also when absent) = loopback and the node's networks only.
   */
  readonly allowRecursion?: readonly Cidr[]
  /**
   * --discovery-resolver: where meshlet.io/replicas-from-dns names are resolved, "host:port" each.
   * Default: empty (also when absent) = the nameservers of /etc/resolv.conf.
   */
  readonly discoveryResolvers?: readonly string[]
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
   * address. Default: 1 (also when absent).
   */
  readonly dnsWorkers?: number
  /** --ingress-class: the IngressClass name meshlet serves. Default: meshlet. */
  readonly ingressClass: string
  /** --access-log: one log line per proxied request. Default: false (off; issue 19 measured its cost). */
  readonly accessLog: boolean
  /**
   * --max-connections: client connections per Ingress listener, a count. Default: null (also when absent) = derived from
   * RLIMIT_NOFILE (proxy/limits.ts).
   */
  readonly maxConnections?: number | null
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
   * a TCP port (1-65535). Default: 9901 (also when absent).
   */
  readonly peerPort?: number
  /**
   * --l4-mode: the L4 data plane: userspace (Node listeners), nftables (kernel DNAT, lb/nft.ts) or auto (nftables
   * when `nft` works in meshlet's network namespace, else userspace). Default: auto (also when absent).
   */
  readonly l4Mode?: 'userspace' | 'nftables' | 'auto'
  /**
   * --store etcd://HOST:PORT[,...] with --etcd-prefix, --etcd-cacert, --etcd-cert, --etcd-key: objects, node leases
   * and LoadBalancer elections from etcd (store/README.md). Default: null (also when absent) = --store file, the -f
   * manifests.
   */
  readonly etcd?: EtcdOptions | null
  /**
   * --node-lease-seconds: TTL of this node's etcd lease, in seconds (2-3600); etcd mode only. Default: 3 seconds (also
   * when absent).
   */
  readonly nodeLeaseSeconds?: number
  /**
   * --workers: threads serving the http and https Ingress listeners, a count (1-64): 1 = the main thread, N ≥ 2 = N
   * worker threads sharing the ports (SO_REUSEPORT; proxy/workers.ts). CLI default: os.availableParallelism();
   * 1 when absent (planes started in-process).
   */
  readonly proxyWorkers?: number
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
