// Who may recurse (issue 13 item 9): names outside the zone are forwarded only for clients on loopback, on one of
// this node's own networks (every interface address with its prefix: a Compose or Docker network meshlet sits on,
// the host's LAN) or inside an --allow-recursion CIDR, as CoreDNS's `acl` plugin and unbound's `access-control` do.
// Everyone else gets REFUSED for such names; in-zone names are answered to anyone.
//
// Hot path: one Map lookup per forwarded query (the verdict per client address is cached). The interface list is
// read again when a client would be refused and the list is older than REFRESH_MS, so a network created after start
// (docker compose up) is picked up without a restart; the cache is cleared whenever the list is read.

import { networkInterfaces } from 'node:os'
import { cidrContains, parseCidr, type Cidr } from '../model/ip.ts'

const REFRESH_MS = 5_000
/** Distinct client addresses remembered; the cache is cleared when it is full. */
const MAX_CACHED = 4096
const MAPPED_V4 = '::ffff:'

/** Every interface address with its prefix, as CIDRs (loopback included). */
export function nodeNetworks(): Cidr[] {
  const out: Cidr[] = []
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) {
      // Link-local IPv6 carries a zone ("fe80::1%eth0/64") that parseCidr does not take.
      const cidr = a.cidr === null ? null : parseCidr(a.cidr.replace(/%[^/]*/, ''))
      if (cidr) out.push(cidr)
    }
  }
  return out
}

export class RecursionAcl {
  readonly #allow: readonly Cidr[]
  #networks: Cidr[] = []
  #readAt = 0
  readonly #verdicts = new Map<string, boolean>()

  /** `allow`: the --allow-recursion CIDRs, on top of loopback and the node's networks. */
  constructor(allow: readonly Cidr[]) {
    this.#allow = allow
    this.#readNetworks(Date.now())
  }

  /** May `client` (an IP literal as the socket reports it) have names outside the zone forwarded? */
  allows(client: string): boolean {
    const known = this.#verdicts.get(client)
    if (known !== undefined) return known
    let verdict = this.#decide(client)
    const now = Date.now()
    if (!verdict && now - this.#readAt > REFRESH_MS) {
      this.#readNetworks(now)
      verdict = this.#decide(client)
    }
    if (this.#verdicts.size >= MAX_CACHED) this.#verdicts.clear()
    this.#verdicts.set(client, verdict)
    return verdict
  }

  #readNetworks(now: number): void {
    this.#networks = nodeNetworks()
    this.#readAt = now
    this.#verdicts.clear()
  }

  #decide(client: string): boolean {
    // A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d.
    const ip = client.startsWith(MAPPED_V4) && client.includes('.') ? client.slice(MAPPED_V4.length) : client
    if (ip.startsWith('127.') || ip === '::1') return true
    try {
      for (const c of this.#allow) if (cidrContains(c, ip)) return true
      for (const c of this.#networks) if (cidrContains(c, ip)) return true
    } catch {
      // not an address ipaddr.js can parse: not one we allow
    }
    return false
  }
}
