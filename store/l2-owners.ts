// LoadBalancer address claims (etcd mode, --vip-mode interface). MetalLB's rule (lb/l2-election.ts) says who should
// own an address, but each node applies it to its own view of the leases: when a killed owner comes back, it sees
// itself elected before the current owner has seen it return, and both hold the address for that time. So the owner
// is also recorded: PREFIX/owners/<ip> = node, on the owner's lease, created only when absent (a transaction), and
// a node announces an address only while it is elected and its claim is the recorded one (Snapshot.l2Owners).
//
//   elected, no claim ──txn create-if-absent on my lease──► claim recorded ──► lb adds the address
//   claim mine, no longer elected ──► lb removes the address ──► address off the interface ──► delete the claim
//   owner dies or is cut off ──► its lease expires in etcd ──► the claim goes with it ──► the next elected claims
//
// The previous owner deletes its claim only once the address is off its interface, so the new one adds it after the
// old one removed it: no two running nodes hold it at once. A node cut off from etcd stops announcing when its lease
// runs out by its own clock (node-lease.ts), which is before etcd expires the lease and the claim with it.
//
// A node killed with SIGKILL leaves its addresses on its interface (nobody removes them). When it starts again it
// removes every LoadBalancer address it finds on --vip-interface before it claims anything, and deletes the claims
// its previous run left on the previous lease.

import { networkInterfaces } from 'node:os'
import { isIPv6 } from 'node:net'
import type { Etcd3, IKeyValue } from 'etcd3'
import type { Logger } from 'pino'
import type { Snapshot } from '../model/snapshot.ts'
import type { Store } from '../model/store.ts'
import { runChecked } from '../model/child-process.ts'
import { preferredNode } from '../lb/l2-election.ts'
import { ListWatch } from './list-watch.ts'
import { ownerKey, ownersPrefix } from './keys.ts'

export interface L2OwnersOptions {
  readonly client: Etcd3
  readonly prefix: string
  readonly node: string
  /** --vip-interface: where lb adds the addresses this node announces. */
  readonly vipInterface: string
  readonly store: Store
  /** This node's lease id while it holds it (node-lease.ts), else null: no new claim without a lease. */
  readonly lease: () => string | null
  readonly log: Logger
}

interface Claim {
  readonly node: string
  readonly lease: string
  readonly mod: string
}

/** How long a release waits for lb to take the address off the interface before removing it itself. */
const WITHDRAW_WAIT_MS = 5000
const WITHDRAW_POLL_MS = 10
const RETRY_MS = 500

export class L2Owners {
  readonly #o: L2OwnersOptions
  readonly #log: Logger
  readonly #lw: ListWatch
  readonly #claims = new Map<string, Claim>()
  #listed = false
  #snapshot: Snapshot | null = null
  #published = ''
  #cleaned = false
  #running = false
  #again = false
  #closed = false
  #retry: NodeJS.Timeout | null = null
  #unsubscribe: (() => void) | null = null

  constructor(o: L2OwnersOptions) {
    this.#o = o
    this.#log = o.log.child({ sub: 'l2-owners' })
    const prefix = ownersPrefix(o.prefix)
    const claimOf = (kv: IKeyValue): Claim => ({
      node: kv.value.toString(),
      lease: String(kv.lease),
      mod: kv.mod_revision,
    })
    const ipOf = (kv: IKeyValue) => kv.key.toString().slice(prefix.length)
    this.#lw = new ListWatch(
      o.client,
      prefix,
      {
        reset: (kvs) => {
          this.#claims.clear()
          for (const kv of kvs) this.#claims.set(ipOf(kv), claimOf(kv))
          this.#listed = true
          this.#kick()
        },
        put: (kv) => {
          this.#claims.set(ipOf(kv), claimOf(kv))
          this.#kick()
        },
        delete: (kv) => {
          this.#claims.delete(ipOf(kv))
          this.#kick()
        },
        connection: () => {},
      },
      this.#log,
    )
  }

  start(): void {
    // Nobody announces before the claims are known: without this the rule alone would decide until the first list.
    this.#published = '{}'
    this.#o.store.setL2Owners({})
    this.#unsubscribe = this.#o.store.subscribe((s) => {
      this.#snapshot = s
      this.#kick()
    })
    void this.#lw.start()
  }

  /** The claims as lb sees them: this node's only when made on its current lease (not a previous run's). */
  #publish(lease: string | null): void {
    const record: Record<string, string> = {}
    for (const [ip, c] of [...this.#claims].sort(([a], [b]) => (a < b ? -1 : 1))) {
      if (c.node === this.#o.node && c.lease !== lease) continue
      record[ip] = c.node
    }
    const text = JSON.stringify(record)
    if (text === this.#published) return
    this.#published = text
    this.#o.store.setL2Owners(record)
  }

  /** One reconciliation at a time; a change meanwhile runs another after it. */
  #kick(): void {
    if (this.#closed) return
    if (this.#running) {
      this.#again = true
      return
    }
    this.#running = true
    void (async () => {
      try {
        do {
          this.#again = false
          await this.#reconcile()
        } while (this.#again && !this.#closed)
      } catch (err) {
        this.#log.warn({ err: String(err) }, 'LoadBalancer address claim failed: retrying')
        if (!this.#closed && !this.#retry)
          this.#retry = setTimeout(() => {
            this.#retry = null
            this.#kick()
          }, RETRY_MS)
      } finally {
        this.#running = false
      }
    })()
  }

  #onInterface(ip: string): boolean {
    return (networkInterfaces()[this.#o.vipInterface] ?? []).some((a) => a.address === ip)
  }

  async #removeAddress(ip: string): Promise<void> {
    const prefix = isIPv6(ip) ? 128 : 32
    await runChecked(['ip', 'address', 'del', `${ip}/${prefix}`, 'dev', this.#o.vipInterface], { timeoutMs: 5000 })
  }

  async #reconcile(): Promise<void> {
    const snapshot = this.#snapshot
    if (!this.#listed || !snapshot) return
    const lease = this.#o.lease()
    this.#publish(lease)
    const me = this.#o.node
    const wish = new Map<string, string | null>()
    for (const svc of snapshot.services)
      for (const ip of svc.loadBalancerIPs) wish.set(ip, preferredNode(snapshot, svc, ip))

    if (!this.#cleaned) {
      // Before the first claim: addresses a previous run of this node left behind (SIGKILL) are not announced by
      // anyone alive here, and another node may hold them by now.
      for (const ip of wish.keys()) {
        if (!this.#onInterface(ip)) continue
        await this.#removeAddress(ip)
        this.#log.warn({ ip, interface: this.#o.vipInterface }, 'address left by a previous run removed')
      }
      this.#cleaned = true
    }
    if (lease === null) return // no lease: nothing to claim with; this node's claims go with its lease

    const { client } = this.#o
    for (const [ip, c] of this.#claims) {
      if (c.node !== me) continue
      if (c.lease === lease && wish.get(ip) === me) continue
      if (c.lease === lease) {
        // lb stops announcing as soon as this node is no longer elected; the claim goes only once it has.
        const until = Date.now() + WITHDRAW_WAIT_MS
        while (this.#onInterface(ip) && Date.now() < until && !this.#closed)
          await new Promise((r) => setTimeout(r, WITHDRAW_POLL_MS))
        if (this.#closed) return
        if (this.#onInterface(ip)) await this.#removeAddress(ip)
      }
      const key = ownerKey(this.#o.prefix, ip)
      const res = await client.if(key, 'Mod', '==', c.mod).then(client.delete().key(key)).commit()
      if (!res.succeeded) continue
      this.#claims.delete(ip)
      this.#log.info({ ip, previousRun: c.lease !== lease }, 'LoadBalancer address released (claim deleted)')
    }
    for (const [ip, w] of wish) {
      if (w !== me || this.#claims.has(ip)) continue
      const key = ownerKey(this.#o.prefix, ip)
      const res = await client.if(key, 'Create', '==', 0).then(client.put(key).value(me).lease(lease)).commit()
      if (!res.succeeded) continue
      this.#log.info({ ip, lease }, 'LoadBalancer address claimed')
      // Known now, at the revision the transaction wrote: lb need not wait for the watch to bring it back.
      this.#claims.set(ip, { node: me, lease, mod: res.header.revision })
      this.#again = true
    }
  }

  /**
   * Stopping (SIGTERM): takes this node's claimed addresses off the interface before the lease is revoked. Revoking
   * deletes the claims and another node claims at once, while lb may keep the address until its drain ends; removed
   * first, the address is never on two nodes. Connections already open on it keep draining on their sockets.
   */
  async withdraw(): Promise<void> {
    this.#closed = true
    // Any claim of this node: by now the lease plane counts itself out, so its id is no longer at hand.
    for (const [ip, c] of this.#claims) {
      if (c.node !== this.#o.node || !this.#onInterface(ip)) continue
      await this.#removeAddress(ip).catch((err: unknown) =>
        this.#log.warn({ ip, err: String(err) }, 'address removal before the lease revocation failed'),
      )
      this.#log.info({ ip }, 'stopping: address removed before the lease revocation')
    }
  }

  async close(): Promise<void> {
    this.#closed = true
    if (this.#retry) clearTimeout(this.#retry)
    this.#unsubscribe?.()
    await this.#lw.close()
  }
}
