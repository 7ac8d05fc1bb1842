// Error codes of the L4 balancer. Callers branch on `code`.

import { MeshletError } from '../model/errors.ts'

export type LbErrorCode =
  /** A listener could not bind its address (EADDRINUSE, EADDRNOTAVAIL, EACCES). */
  | 'MLT_LB_BIND'
  /** Every dial attempt to the Service's endpoints failed; the client is reset. */
  | 'MLT_LB_NO_UPSTREAM'
  /** `ip address add/del` failed in interface mode. */
  | 'MLT_LB_VIP_INTERFACE'
  /** A LoadBalancer Service got no address from any IPAddressPool. */
  | 'MLT_LB_POOL_EXHAUSTED'
  /** --l4-mode nftables: `nft` cannot run here, or a transaction on meshlet's table failed. */
  | 'MLT_LB_NFT'

export class LbError extends MeshletError {
  constructor(code: LbErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options)
    this.name = 'LbError'
  }
}
