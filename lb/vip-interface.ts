// --vip-mode interface: Service and LoadBalancer addresses are added to --vip-interface as /32 (/128) so the kernel
// answers ARP/NDP for them on that link (what MetalLB's L2 mode does), and removed when no longer wanted. Addresses
// are added before their listeners open and removed after they close.
//
// A SIGKILLed meshlet cannot remove its addresses, and `ip address` cannot tell meshlet's from anyone else's
// (iproute2 6.1 has no address `proto`; labels are IPv4-only). So every address meshlet adds is first written to a
// state file, one per network namespace and interface (/run/meshlet/vip-<netns inode>-<iface>.json, or under the
// temp directory when /run is not writable). At start the addresses a previous run recorded are taken back as
// stale: the first reconcile keeps those still wanted (`ensure` re-adds them with `replace`) and removes the rest.
// An address that is not in the file is never touched.

import { mkdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs'
import { isIPv6 } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { runChecked, runChild } from '../model/child-process.ts'

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

  /** Addresses a previous run recorded and this one has not claimed yet: removed unless `ensure`d. */
  readonly #stale = new Set<string>()
  readonly #stateFile: string | null

  constructor(iface: string, log: Logger, stateDir?: string) {
    this.#iface = iface
    this.#log = log
    this.#stateFile = stateFilePath(iface, stateDir, log)
    for (const ip of this.#readState()) {
      this.#stale.add(ip)
      this.#added.set(ip, Promise.resolve(null))
    }
    if (this.#stale.size > 0)
      this.#log.info(
        { interface: iface, addresses: [...this.#stale], file: this.#stateFile },
        'addresses left by a previous run: kept if still wanted, else removed',
      )
  }

  /** Resolves with null when the address is on the interface, or the error text. */
  ensure(ip: string): Promise<string | null> {
    let p = this.#added.get(ip)
    if (!p || this.#stale.delete(ip)) {
      p = this.#add(ip)
      this.#added.set(ip, p)
      this.#writeState()
    }
    return p
  }

  #readState(): string[] {
    if (!this.#stateFile) return []
    try {
      const v = JSON.parse(readFileSync(this.#stateFile, 'utf8')) as { addresses?: unknown }
      return Array.isArray(v.addresses) ? v.addresses.filter((a): a is string => typeof a === 'string') : []
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
        this.#log.warn({ file: this.#stateFile, err: (err as Error).message }, 'VIP state file unreadable; ignored')
      return []
    }
  }

  /** Written before an address is added (so a crash right after still finds it) and after one is removed. */
  #writeState(): void {
    if (!this.#stateFile) return
    try {
      if (this.#added.size === 0) unlinkSync(this.#stateFile)
      else {
        const tmp = `${this.#stateFile}.tmp`
        writeFileSync(tmp, JSON.stringify({ interface: this.#iface, addresses: this.addresses() }))
        renameSync(tmp, this.#stateFile)
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
        this.#log.warn({ file: this.#stateFile, err: (err as Error).message }, 'VIP state file not written')
    }
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
      this.#writeState()
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
    const stale = this.#stale.delete(ip)
    const prefix = isIPv6(ip) ? 128 : 32
    const r = await runChild(['ip', 'address', 'del', `${ip}/${prefix}`, 'dev', this.#iface], {
      timeoutMs: IP_TIMEOUT_MS,
    }).catch((err: Error) => ({ code: -1, stderr: err.message }))
    // The file is rewritten after the removal: a crash before it only means one more try next start.
    if (!this.#added.has(ip)) this.#writeState()
    if (r.code === 0) this.#log.info({ ip, interface: this.#iface, stale }, 'address removed')
    // A stale address someone already removed (or the interface gone) is what was wanted.
    else if (stale && /Cannot assign|Cannot find device/.test(r.stderr))
      this.#log.debug({ ip, interface: this.#iface }, 'stale address already gone')
    else this.#log.warn({ ip, interface: this.#iface, err: r.stderr.trim() }, 'address removal failed')
  }

  addresses(): string[] {
    return [...this.#added.keys()].sort()
  }

  async releaseAll(): Promise<void> {
    await Promise.all(this.addresses().map((ip) => this.release(ip)))
  }
}

/** One file per network namespace (its inode) and interface; null (no marking) when no directory can be written. */
function stateFilePath(iface: string, stateDir: string | undefined, log: Logger): string | null {
  let netns = 'host'
  try {
    netns = String(statSync('/proc/self/ns/net').ino)
  } catch {
    // Not Linux: one namespace.
  }
  const name = `vip-${netns}-${iface.replace(/[^A-Za-z0-9_.-]/g, '_')}.json`
  for (const dir of stateDir ? [stateDir] : ['/run/meshlet', join(tmpdir(), 'meshlet')]) {
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 })
      return join(dir, name)
    } catch {
      // next candidate
    }
  }
  log.warn({ interface: iface }, 'no directory for the VIP state file: addresses a crash leaves are not removed')
  return null
}
