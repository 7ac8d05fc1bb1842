// Upstreams: one long-lived Endpoint (with its keep-alive connections) per endpoint address, kept across Snapshots
// (Envoy EDS: an endpoint-only change leaves the pools alone), and per Snapshot one UpstreamGroup per Service port:
// the endpoints a route may pick from, in a plain array. An Endpoint has two connection pools, one per engine: the
// raw HTTP/1.1 engine's own (h1/upstream-conn.ts `RawPool`: idle, open, waiting) and an undici Pool for the node:http2 engine, made
// on first use.
//
//   EndpointRegistry  "ip:port|connect-ms" ──► Endpoint { raw pool, undici pool, inflight, cookie } (lives while any table uses it)
//   UpstreamGroup     "ns/svc:port"         ──► Endpoint[]  + round-robin cursor       (rebuilt with each Snapshot)

import { createHash } from 'node:crypto'
import { Pool } from 'undici'
import type { EndpointState, ServicePortState } from '../model/snapshot.ts'
import type { LoadBalance } from './routes/annotations.ts'

/** Upstream keep-alive idle time, below Node's 5 s server default so meshlet closes first (spec §1.8.7). */
export const UPSTREAM_KEEPALIVE_MS = 4000
/** Connections per endpoint; requests queue beyond it. */
export const UPSTREAM_CONNECTIONS = 256

/** A pool of connections to one endpoint, as the Endpoint sees it: something to close when it retires. */
export interface ConnectionPool {
  /** Closes the idle connections; busy ones close when their exchange ends (the endpoint is `retired`). */
  closeIdle(): void
}

export class Endpoint {
  readonly key: string
  readonly host: string
  readonly port: number
  readonly connectTimeoutMs: number
  #pool: Pool | null = null
  /** The affinity cookie value naming this endpoint (a hash, so addresses are not exposed). */
  readonly cookie: string
  /** Requests in flight (least-request balancing). */
  inflight = 0
  /** Set when no table uses the endpoint any more; its pools are closing. */
  retired = false
  /** Connection pools of other engines (the raw engine's RawPool, h1/upstream-conn.ts), closed on retirement. */
  readonly #pools: ConnectionPool[] = []

  constructor(key: string, host: string, port: number, connectTimeoutMs: number) {
    this.key = key
    this.host = host
    this.port = port
    this.connectTimeoutMs = connectTimeoutMs
    this.cookie = createHash('sha1').update(`${host}:${port}`).digest('hex').slice(0, 16)
  }

  addPool(p: ConnectionPool): void {
    this.#pools.push(p)
  }

  /** The undici Pool (node:http2 engine), made on first use. */
  get pool(): Pool {
    if (this.#pool === null) {
      const origin = this.host.includes(':') ? `http://[${this.host}]:${this.port}` : `http://${this.host}:${this.port}`
      this.#pool = new Pool(origin, {
        connections: UPSTREAM_CONNECTIONS,
        pipelining: 1,
        keepAliveTimeout: UPSTREAM_KEEPALIVE_MS,
        keepAliveMaxTimeout: UPSTREAM_KEEPALIVE_MS,
        connect: { timeout: this.connectTimeoutMs },
        // Per-request values are set in each dispatch; these are only the ceilings.
        headersTimeout: 0,
        bodyTimeout: 0,
      })
    }
    return this.#pool
  }

  /** Closes idle connections at once; busy ones close when their exchange ends (`retired`). */
  async retire(): Promise<void> {
    this.retired = true
    for (const p of this.#pools) p.closeIdle()
    // undici rejects close() only for a pool already closed or destroyed: then there is nothing left to release.
    if (this.#pool !== null) await this.#pool.close().catch(() => {})
  }

  async destroy(): Promise<void> {
    this.retired = true
    for (const p of this.#pools) p.closeIdle()
    // undici's destroy() never rejects (its callbacks get no error); a pool being destroyed has nothing left to release.
    if (this.#pool !== null) await this.#pool.destroy().catch(() => {})
  }
}

export class EndpointRegistry {
  #endpoints = new Map<string, Endpoint>()

  get(host: string, port: number, connectTimeoutMs: number): Endpoint {
    const key = `${host}:${port}|${connectTimeoutMs}`
    let ep = this.#endpoints.get(key)
    if (!ep) {
      ep = new Endpoint(key, host, port, connectTimeoutMs)
      this.#endpoints.set(key, ep)
    }
    return ep
  }

  get size(): number {
    return this.#endpoints.size
  }

  /**
   * Retires every endpoint not in `live`: its pool closes gracefully (in-flight requests finish, idle sockets are
   * closed at once, no new requests go to it) — spec §1.8.8.
   */
  sweep(live: ReadonlySet<Endpoint>): void {
    for (const [key, ep] of this.#endpoints) {
      if (live.has(ep)) continue
      this.#endpoints.delete(key)
      void ep.retire()
    }
  }

  async closeAll(deadline: number): Promise<void> {
    const all = [...this.#endpoints.values()]
    this.#endpoints.clear()
    const closing = Promise.all(all.map((ep) => ep.retire()))
    const left = Math.max(0, deadline - Date.now())
    let timer: NodeJS.Timeout | undefined
    await Promise.race([closing, new Promise((r) => (timer = setTimeout(r, left)))])
    clearTimeout(timer)
    await Promise.all(all.map((ep) => ep.destroy()))
  }
}

/** The endpoints a Service port offers: ready ones, else serving+terminating ones (kube-proxy's fallback). */
export function usableEndpoints(port: ServicePortState): EndpointState[] {
  const ready = port.endpoints.filter((e) => e.ready)
  if (ready.length > 0) return ready
  return port.endpoints.filter((e) => e.serving && e.terminating)
}

export class UpstreamGroup {
  /** "namespace/name" of the Service (the reporter's key). */
  readonly service: string
  /** "namespace/name:port" for logs and metrics. */
  readonly label: string
  readonly endpoints: readonly Endpoint[]
  #rr = 0
  #byCookie: Map<string, Endpoint> | null = null

  constructor(service: string, label: string, endpoints: readonly Endpoint[]) {
    this.service = service
    this.label = label
    this.endpoints = endpoints
    // Start each group at a different place so many groups over the same endpoints do not move in lockstep.
    this.#rr = Math.floor(Math.random() * Math.max(1, endpoints.length))
  }

  /** Picks an endpoint other than `avoid1`/`avoid2` (earlier failed tries) when there is one. */
  pick(policy: LoadBalance, avoid1: Endpoint | null, avoid2: Endpoint | null): Endpoint | null {
    const eps = this.endpoints
    const n = eps.length
    if (n === 0) return null
    if (n === 1) return avoid1 === eps[0] || avoid2 === eps[0] ? null : eps[0]!
    if (policy === 'least_request' && avoid1 === null) {
      // Power of two choices over in-flight requests (Envoy LEAST_REQUEST, Traefik p2c).
      const a = eps[(Math.random() * n) | 0]!
      let b = eps[(Math.random() * n) | 0]!
      if (b === a) b = eps[(eps.indexOf(a) + 1) % n]!
      return b.inflight < a.inflight ? b : a
    }
    for (let i = 0; i < n; i++) {
      const ep = eps[this.#rr++ % n]!
      if (this.#rr >= 0x3fffffff) this.#rr = 0
      if (ep !== avoid1 && ep !== avoid2) return ep
    }
    return null
  }

  /** The endpoint an affinity cookie names, if it is still in the group. */
  byCookie(value: string): Endpoint | null {
    if (this.#byCookie === null) {
      this.#byCookie = new Map()
      for (const ep of this.endpoints) this.#byCookie.set(ep.cookie, ep)
    }
    return this.#byCookie.get(value) ?? null
  }
}
