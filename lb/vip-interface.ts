// --vip-mode interface: Service and LoadBalancer addresses are added to --vip-interface as /32 (/128) so the kernel
// answers ARP/NDP for them on that link (what MetalLB's L2 mode does), and removed when no longer wanted. Addresses
// are added before their listeners open and removed after they close.

import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { isIPv6 } from 'node:net'
import type { Logger } from 'pino'

const run = promisify(execFile)

export class VipInterface {
  readonly #iface: string
  readonly #log: Logger
  /** ip → the add in progress or done. */
  readonly #added = new Map<string, Promise<string | null>>()

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
      await run('ip', ['address', 'replace', `${ip}/${prefix}`, 'dev', this.#iface])
      // Gratuitous ARP lets neighbours update at once; arping may be absent, which only delays them.
      if (!isIPv6(ip)) run('arping', ['-U', '-c', '3', '-I', this.#iface, ip]).catch(() => {})
      this.#log.info({ ip, interface: this.#iface }, 'address added')
      return null
    } catch (err) {
      this.#added.delete(ip)
      const msg = `ip address add ${ip}/${prefix} dev ${this.#iface} failed: ${((err as { stderr?: string }).stderr ?? String(err)).trim()}`
      this.#log.error({ ip, interface: this.#iface }, msg)
      return msg
    }
  }

  async release(ip: string): Promise<void> {
    if (!this.#added.delete(ip)) return
    const prefix = isIPv6(ip) ? 128 : 32
    try {
      await run('ip', ['address', 'del', `${ip}/${prefix}`, 'dev', this.#iface])
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
