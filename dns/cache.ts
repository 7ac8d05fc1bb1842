// The cache of forwarded replies (specs/dns.md §10 "Caching"): keyed by lowercased question + DO bit, bounded in
// entries with least-recently-used eviction (a Map keeps insertion order; a hit re-inserts). Positive TTL = the
// smallest answer TTL, at most 3600 s; negative TTL = min(SOA TTL, SOA MINIMUM), at most 1800 s (RFC 2308 §5).
// Truncated replies, SERVFAIL and anything else are never cached.
//
// It is the owner of what is cached: every store and every removal (expiry found by `get`, eviction, clear) is told
// to `listener`, which keeps the fast-path mirrors (dns/fast-cache.ts, one per thread that answers UDP) in step.

import type { Scan } from './message.ts'

export interface CacheEntry {
  readonly buf: Buffer
  readonly scan: Scan
  /**
   * performance.now() when stored: TTLs are counted down from here. A monotonic clock, so a wall clock stepped back
   * never raises a TTL and one stepped forward never expires the cache early.
   */
  readonly storedAt: number
  /** performance.now() after which the entry is gone; 0 until stored. */
  expires: number
}

const MAX_POSITIVE = 3600
const MAX_NEGATIVE = 1800

export function cacheTtl(scan: Scan): number {
  if (scan.tc) return 0
  if (scan.rcode === 0 && scan.anCount > 0) return scan.minTtl < 0 ? 0 : Math.min(scan.minTtl, MAX_POSITIVE)
  if (scan.rcode === 0 || scan.rcode === 3) return scan.negTtl < 0 ? 0 : Math.min(scan.negTtl, MAX_NEGATIVE)
  return 0
}

/** Told of every change, in order. */
export interface CacheListener {
  stored(key: string, entry: CacheEntry): void
  removed(key: string): void
  cleared(): void
  /** About to evict: the last chance to report fast-path hits (`touch`) so that they count for the LRU order. */
  beforeEvict(): void
}

export class ReplyCache {
  readonly #max: number
  readonly #map = new Map<string, CacheEntry>()
  listener: CacheListener | null = null

  constructor(max: number) {
    this.#max = max
  }

  get size(): number {
    return this.#map.size
  }

  get(key: string): CacheEntry | null {
    const e = this.#map.get(key)
    if (!e) return null
    if (performance.now() >= e.expires) {
      this.#map.delete(key)
      this.listener?.removed(key)
      return null
    }
    this.#map.delete(key)
    this.#map.set(key, e)
    return e
  }

  put(key: string, entry: CacheEntry): void {
    const ttl = cacheTtl(entry.scan)
    if (ttl <= 0) return
    entry.expires = entry.storedAt + ttl * 1000
    this.#map.delete(key)
    this.#map.set(key, entry)
    this.listener?.stored(key, entry)
    if (this.#map.size > this.#max) this.listener?.beforeEvict()
    while (this.#map.size > this.#max) {
      const oldest = this.#map.keys().next().value
      if (oldest === undefined) break
      this.#map.delete(oldest)
      this.listener?.removed(oldest)
    }
  }

  /**
   * Hits answered on the fast paths (dns/fast-cache.ts) reported back: each moves to the most recently used end,
   * as a hit through `get` does. Keys no longer cached are ignored.
   */
  touch(keys: readonly string[]): void {
    for (const key of keys) {
      const e = this.#map.get(key)
      if (!e) continue
      this.#map.delete(key)
      this.#map.set(key, e)
    }
  }

  clear(): void {
    this.#map.clear()
    this.listener?.cleared()
  }
}
