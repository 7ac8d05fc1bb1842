// --vip-mode interface: Service and LoadBalancer addresses are added to --vip-interface as /32 (/128) so the kernel
// answers ARP/NDP for them on that link (what MetalLB's L2 mode does), and removed when no longer wanted. Addresses
// are added before their listeners open and removed after they close.

import { isIPv6 } from 'node:net'
import type { Logger } from 'pino'
import { runChecked } from '../model/child-process.ts'

/** `ip` is mandatory and quick; a stuck one must not hold a listener in 'opening' for ever. */
const IP_TIMEOUT_MS = 10_000
/** arping -c 3 sends one announcement a second. */
const ARPING_TIMEOUT_MS = 5_000

export class VipInterface {
  readonly #iface: string
  readonly #log: Logger
  /** ip → the add in progress or done. */
  readonly #added = new Map<string, Promise<string | null>>()
  /** Reasons arping failed, so each is logged once, not once per address. */
  readonly #announceFailures = new Set<string>()

  constructor(iface: string, log: Logger) {
    this.#iface = iface
    this.#log = log
  }

  /** Resolves with null when the address is on the interface, or the error text. */
  ensure(ip: string): Promise<string | null> {
    let p = this.#added.get(ip)
    if (!p) {
      p = this.#add(ip)
      this.#added.set(ip, p)
    }
    return p
  }

  async #add(ip: string): Promise<string | null> {
    const prefix = isIPv6(ip) ? 128 : 32
    try {
      // `replace` is idempotent: an address left by a previous run is adopted, not an error.
      await runChecked(['ip', 'address', 'replace', `${ip}/${prefix}`, 'dev', this.#iface], {
        timeoutMs: IP_TIMEOUT_MS,
      })
    } catch (err) {
      this.#added.delete(ip)
      const msg = `ip address add ${ip}/${prefix} dev ${this.#iface} failed: ${(err as Error).message}`
      this.#log.error({ ip, interface: this.#iface, code: 'MLT_LB_VIP_INTERFACE' }, msg)
      return msg
    }
    this.#log.info({ ip, interface: this.#iface }, 'address added')
    if (!isIPv6(ip)) void this.#announce(ip)
    return null
  }

  /**
   * Gratuitous ARP lets neighbours update at once when an address moves between nodes. It is optional: without it
   * (arping absent, or not allowed to exec for lack of CAP_NET_RAW) neighbours learn the new MAC when their entry
   * expires. Its failure is logged once per reason and never touches the address it announces.
   */
  async #announce(ip: string): Promise<void> {
    try {
      await runChecked(['arping', '-U', '-c', '3', '-I', this.#iface, ip], { timeoutMs: ARPING_TIMEOUT_MS })
    } catch (err) {
      const reason = (err as Error).message
      if (this.#announceFailures.has(reason)) return
      this.#announceFailures.add(reason)
      this.#log.warn({ ip, interface: this.#iface, reason }, 'gratuitous ARP skipped (optional)')
    }
  }

  async release(ip: string): Promise<void> {
    if (!this.#added.delete(ip)) return
    const prefix = isIPv6(ip) ? 128 : 32
    try {
      await runChecked(['ip', 'address', 'del', `${ip}/${prefix}`, 'dev', this.#iface], { timeoutMs: IP_TIMEOUT_MS })
      this.#log.info({ ip, interface: this.#iface }, 'address removed')
    } catch (err) {
      this.#log.warn({ ip, interface: this.#iface, err: String(err) }, 'address removal failed')
    }
  }

  addresses(): string[] {
    return [...this.#added.keys()].sort()
  }

  async releaseAll(): Promise<void> {
    await Promise.all(this.addresses().map((ip) => this.release(ip)))
  }
}
