// sessionAffinity: ClientIP (specs/l4-health.md §3.3): a table per Service port, client IP → endpoint, with a sliding
// window refreshed by each new connection or UDP flow (never by bytes on an open one). Entries whose endpoint leaves
// the usable set are dropped in the same Snapshot; expired ones are swept; the table is capped.

import type { EndpointState } from '../model/snapshot.ts'

/** Per Service port; past it the oldest entry is evicted. */
export const AFFINITY_CAP = 65536

interface Entry {
  ip: string
  port: number
  lastUsed: number
}

export class AffinityTable {
  #entries = new Map<string, Entry>()
  timeoutMs: number

  constructor(timeoutSeconds: number) {
    this.timeoutMs = timeoutSeconds * 1000
  }

  get size(): number {
    return this.#entries.size
  }

  /** The sticky endpoint for `client` if it is still in `list` and the entry is fresh; refreshes it. */
  lookup(client: string, list: readonly EndpointState[], now: number): EndpointState | null {
    const entry = this.#entries.get(client)
    if (!entry) return null
    if (now - entry.lastUsed >= this.timeoutMs) {
      this.#entries.delete(client)
      return null
    }
    for (const e of list) {
      if (e.ip === entry.ip && e.port === entry.port) {
        entry.lastUsed = now
        // Map order is insertion order: re-inserting keeps the oldest entry first for eviction.
        this.#entries.delete(client)
        this.#entries.set(client, entry)
        return e
      }
    }
    return null
  }

  remember(client: string, ep: EndpointState, now: number): void {
    this.#entries.delete(client)
    if (this.#entries.size >= AFFINITY_CAP) {
      const oldest = this.#entries.keys().next().value
      if (oldest !== undefined) this.#entries.delete(oldest)
    }
    this.#entries.set(client, { ip: ep.ip, port: ep.port, lastUsed: now })
  }

  /** Drops entries pointing at endpoints not in `usable` ("ip|port" keys). */
  retain(usable: ReadonlySet<string>): void {
    for (const [client, e] of this.#entries) if (!usable.has(`${e.ip}|${e.port}`)) this.#entries.delete(client)
  }

  sweep(now: number): void {
    for (const [client, e] of this.#entries) if (now - e.lastUsed >= this.timeoutMs) this.#entries.delete(client)
  }
}
