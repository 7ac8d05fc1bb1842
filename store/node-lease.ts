// Membership by lease (etcd mode): this node keeps an etcd lease of --node-lease-seconds and publishes
// PREFIX/nodes/<node> on it; every node watches PREFIX/nodes/ and the keys there are the live nodes, which feed the
// LoadBalancer election (Store.setLiveNodes → lb/l2-election.ts, MetalLB's rule over these members).
//
// A node counts itself in only while it holds its lease, by its own clock: each keepalive sent at t and answered
// extends the lease to at least t + TTL on the server, so the node gives up at t + TTL without waiting for etcd.
// A node cut off from etcd therefore stops announcing before etcd expires its key and the others take over, and
// there is no moment with two owners beyond the time to move an address.
//
//   keepalive every TTL/3 ──ok──► heldUntil = sentAt + TTL ──► timer at heldUntil: not held → self out of the set
//          └── lease gone on the server (TTL 0) ──► grant a new lease, put the key again

import { networkInterfaces } from 'node:os'
import { EtcdLeaseInvalidError, type Etcd3, type Lease } from 'etcd3'
import type { Logger } from 'pino'
import type { Plane } from '../model/plane.ts'
import { ListWatch } from './list-watch.ts'
import { nodeKey, nodesPrefix } from './keys.ts'

export interface NodeLeaseOptions {
  readonly client: Etcd3
  readonly prefix: string
  readonly node: string
  readonly ttlSeconds: number
  /** What PREFIX/nodes/<node> says about this node (addresses, admin port, version). */
  readonly info: Record<string, unknown>
  readonly log: Logger
  /** The live set after each change: the other nodes with a key, and this node while it holds its lease. */
  readonly onLive: (names: readonly string[]) => void
  /** This node's lease is failing (reason) or fine again (null): the store plane shows it as degraded. */
  readonly onCutOff: (reason: string | null) => void
  /** Runs before the lease is revoked at close (l2-owners.ts takes its addresses off the interface). */
  readonly beforeRevoke?: () => Promise<void>
  /** Injected clock (ms) for tests; default Date.now. */
  readonly now?: () => number
}

/** This node's non-loopback addresses, for PREFIX/nodes/<node>. */
export function nodeAddresses(): string[] {
  return Object.values(networkInterfaces())
    .flatMap((list) => list ?? [])
    .filter((a) => !a.internal)
    .map((a) => a.address)
}

export class NodeLease implements Plane {
  readonly name = 'lease'
  readonly #o: NodeLeaseOptions
  readonly #log: Logger
  readonly #now: () => number
  readonly #others = new Set<string>()
  readonly #lw: ListWatch
  #lease: Lease | null = null
  #leaseId: string | null = null
  /** PREFIX/nodes/<node> written on the current lease. */
  #published = false
  #heldUntil = 0
  #held = false
  #failing: string | null = null
  #tick: NodeJS.Timeout | null = null
  #expiry: NodeJS.Timeout | null = null
  #closed = false
  #listed = false

  constructor(o: NodeLeaseOptions) {
    this.#o = o
    this.#log = o.log.child({ sub: 'lease' })
    this.#now = o.now ?? Date.now
    const prefix = nodesPrefix(o.prefix)
    const nameOf = (key: Buffer) => key.toString().slice(prefix.length)
    this.#lw = new ListWatch(
      o.client,
      prefix,
      {
        reset: (kvs) => {
          this.#others.clear()
          for (const kv of kvs) this.#others.add(nameOf(kv.key))
          this.#listed = true
          this.#publish()
        },
        put: (kv) => {
          const name = nameOf(kv.key)
          if (this.#others.has(name)) return
          this.#others.add(name)
          this.#log.info({ node: name }, 'node joined (lease)')
          this.#publish()
        },
        delete: (kv) => {
          const name = nameOf(kv.key)
          if (!this.#others.delete(name)) return
          this.#log.info({ node: name }, 'node left (lease expired or revoked)')
          this.#publish()
        },
        connection: () => {},
      },
      this.#log,
    )
  }

  /** Starts keeping the lease and watching the others; resolves after the first attempt at both. */
  async start(): Promise<void> {
    await Promise.all([this.#keep(), this.#lw.start()])
  }

  #publish(): void {
    if (!this.#listed) return
    const live = [...this.#others].filter((n) => n !== this.#o.node)
    if (this.#held) live.push(this.#o.node)
    this.#o.onLive(live)
  }

  #setHeld(held: boolean, why: string): void {
    if (this.#held === held) return
    this.#held = held
    if (held) this.#log.info({ lease: this.#leaseId }, 'node lease held: taking part in LoadBalancer elections')
    else this.#log.warn({ lease: this.#leaseId, reason: why }, 'node lease not held: not announcing')
    this.#publish()
  }

  #setFailing(reason: string | null): void {
    if (this.#failing === reason) return
    if (reason !== null && this.#failing === null) this.#log.warn({ reason }, 'node lease keepalive failing')
    this.#failing = reason
    this.#o.onCutOff(reason)
  }

  /** Extends what this node believes it holds to sentAt + ttl and arms the local expiry. */
  #extend(sentAt: number, ttlSeconds: number): void {
    this.#heldUntil = sentAt + ttlSeconds * 1000
    if (this.#expiry) clearTimeout(this.#expiry)
    this.#expiry = setTimeout(() => this.#expire(), Math.max(0, this.#heldUntil - this.#now()))
    this.#setHeld(true, '')
  }

  #expire(): void {
    if (this.#now() < this.#heldUntil) return
    this.#setHeld(false, `no keepalive answered within ${this.#o.ttlSeconds} s`)
  }

  async #keep(): Promise<void> {
    if (this.#closed) return
    const periodMs = (this.#o.ttlSeconds * 1000) / 3
    const sentAt = this.#now()
    try {
      if (this.#lease === null || !this.#published) {
        this.#lease?.release()
        this.#published = false
        const lease = this.#o.client.lease(this.#o.ttlSeconds, { autoKeepAlive: false })
        this.#lease = lease
        this.#leaseId = await lease.grant()
        await lease.put(nodeKey(this.#o.prefix, this.#o.node)).value(JSON.stringify(this.#o.info)).exec()
        this.#published = true
        this.#extend(sentAt, this.#o.ttlSeconds)
      } else {
        const res = await this.#lease.keepaliveOnce({ deadline: sentAt + periodMs })
        this.#extend(sentAt, Number(res.TTL))
      }
      this.#setFailing(null)
    } catch (err) {
      if (err instanceof EtcdLeaseInvalidError || !this.#published) {
        // Expired on the server, or never granted or written: a new lease next time, and the key again.
        this.#lease?.release()
        this.#lease = null
        this.#leaseId = null
        this.#published = false
        if (err instanceof EtcdLeaseInvalidError) this.#setHeld(false, 'lease expired on the server')
      }
      this.#setFailing(err instanceof Error ? err.message : String(err))
    }
    if (!this.#closed) this.#tick = setTimeout(() => void this.#keep(), Math.max(0, sentAt + periodMs - this.#now()))
  }

  /** The lease id while this node holds its lease and its key is written, else null (l2-owners.ts claims on it). */
  heldLease(): string | null {
    return this.#held && this.#published ? this.#leaseId : null
  }

  ready(): boolean {
    return true
  }

  status() {
    return {
      node: this.#o.node,
      ttlSeconds: this.#o.ttlSeconds,
      lease: this.#leaseId,
      held: this.#held,
      heldUntil: this.#heldUntil === 0 ? null : new Date(this.#heldUntil).toISOString(),
      failing: this.#failing,
      others: [...this.#others].filter((n) => n !== this.#o.node).sort(),
    }
  }

  /** Revokes the lease, so the others take over at once rather than after the TTL. */
  async close(): Promise<void> {
    this.#closed = true
    if (this.#tick) clearTimeout(this.#tick)
    if (this.#expiry) clearTimeout(this.#expiry)
    this.#setHeld(false, 'stopping')
    await this.#o.beforeRevoke?.()
    await this.#lw.close()
    const lease = this.#lease
    this.#lease = null
    if (lease) await lease.revoke({ deadline: this.#now() + 1000 }).catch(() => {})
  }
}
