// The L4 balancer's error catalogue (STYLE.md "Errors"): one code per way a listener, a connection or an address
// allocation can fail. /status and the log lines carry the code beside the text, so callers branch on `code`. No lb
// failure is thrown across a module boundary (each is a state shown in /status) except MLT_LB_NFT at start.

import { MeshletError } from '../model/errors.ts'

export const LB_ERRORS = {
  /** A listener could not bind its address (EADDRINUSE, EADDRNOTAVAIL, EACCES): /status listener `code`, error log. */
  MLT_LB_BIND: 'listener could not bind',
  /** Every dial attempt to the Service's endpoints failed (or none was usable); the client is reset. */
  MLT_LB_NO_UPSTREAM: 'no endpoint could be dialled',
  /** `ip address replace` failed in interface mode: the listener stays in error, not ready. */
  MLT_LB_VIP_INTERFACE: 'address could not be added to the interface',
  /** A LoadBalancer Service got no address: every IPAddressPool it may use is full (MetalLB "no available IPs"). */
  MLT_LB_POOL_EXHAUSTED: 'no available IPs',
  /**
   * A LoadBalancer Service got no address because the pools cannot honour its request: a requested IP outside every
   * pool, an unknown address-pool, a sharing conflict, both loadBalancerIPs and spec.loadBalancerIP.
   */
  MLT_LB_ADDRESS_REQUEST: 'requested address cannot be given',
  /** --l4-mode nftables: `nft` cannot run here, or a transaction on meshlet's table failed. */
  MLT_LB_NFT: 'nftables data plane failed',
} as const

export type LbErrorCode = keyof typeof LB_ERRORS

/** Thrown only at start (`--l4-mode nftables` where nft cannot run) and kept in /status for a failed transaction. */
export class LbError extends MeshletError {
  constructor(code: LbErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options)
    this.name = 'LbError'
  }
}
