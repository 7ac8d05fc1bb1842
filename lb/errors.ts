// The L4 balancer's error catalogue (STYLE.md "Errors"), code → { what happened, what to do }: one code per way a listener, a connection or an address
// allocation can fail. /status and the log lines carry the code beside the text, so callers branch on `code`. No lb
// failure is thrown across a module boundary (each is a state shown in /status) except MLT_LB_NFT at start.

import { catalogueError, defineCatalogue } from '../model/errors.ts'

export const LB_ERRORS = defineCatalogue({
  /** A listener could not bind its address (EADDRINUSE, EADDRNOTAVAIL, EACCES): /status listener `code`, error log. */
  MLT_LB_BIND: {
    message: 'listener could not bind',
    fix: 'another process holds the port (ss -ltnup | grep :PORT), or the address is not on this host, or a port below 1024 needs root or CAP_NET_BIND_SERVICE; change the Service port or nodePort, or stop the other process',
  },
  /** Every dial attempt to the Service's endpoints failed (or none was usable); the client is reset. */
  MLT_LB_NO_UPSTREAM: {
    message: 'no endpoint could be dialled',
    fix: "check the Service's endpoints in /status: are its Pods ready, does targetPort match the port the Pods listen on, and can this host reach their IPs?",
  },
  /** `ip address replace` failed in interface mode: the listener stays in error, not ready. */
  MLT_LB_VIP_INTERFACE: {
    message: 'address could not be added to the interface',
    fix: 'run as root (or with CAP_NET_ADMIN) and check that --vip-interface names an interface that exists and is up (ip link show IFACE)',
  },
  /** A LoadBalancer Service got no address: every IPAddressPool it may use is full (MetalLB "no available IPs"). */
  MLT_LB_POOL_EXHAUSTED: {
    message: 'no available IPs',
    fix: 'add addresses to an IPAddressPool the Service may use, or delete a LoadBalancer Service that holds one',
  },
  /**
   * A LoadBalancer Service got no address because the pools cannot honour its request: a requested IP outside every
   * pool, an unknown address-pool, a sharing conflict, both loadBalancerIPs and spec.loadBalancerIP.
   */
  MLT_LB_ADDRESS_REQUEST: {
    message: 'requested address cannot be given',
    fix: 'request an address inside a pool (or drop loadBalancerIP(s)), name an existing pool in the address-pool annotation, and give Services that share an IP the same sharing key and distinct ports',
  },
  /** --l4-mode nftables: `nft` cannot run here, or a transaction on meshlet's table failed. */
  MLT_LB_NFT: {
    message: 'nftables data plane failed',
    fix: 'install nftables and run meshlet as root (or with CAP_NET_ADMIN) in a network namespace where `nft list ruleset` works, or start with --l4-mode userspace',
  },
})

export type LbErrorCode = keyof typeof LB_ERRORS

/** Thrown only at start (`--l4-mode nftables` where nft cannot run) and kept in /status for a failed transaction. */
export class LbError extends catalogueError('LbError', LB_ERRORS) {}
