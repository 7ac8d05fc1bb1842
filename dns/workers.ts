// The main-thread side of --dns-workers N (N ≥ 2): starts N worker threads (dns/worker.ts) on one address with
// SO_REUSEPORT (the first one binds, possibly port 0; the others join its port), posts what each Snapshot changed to each (dns/zone-delta.ts), answers
// the queries they hand over (forwarded names, ExternalName chases) through the main thread's resolver, and drains
// them on close. Every store into the forwarder's cache, and every removal, is broadcast to each worker's fast-path
// mirror (dns/fast-cache.ts), so a name filled through one worker is a cache hit in all of them. Readiness: every worker is listening and has applied the newest Snapshot posted to it at least once.

import { Worker } from 'node:worker_threads'
import type { Logger } from 'pino'
import type { Snapshot } from '../model/snapshot.ts'
import { COUNTERS } from './answer.ts'
import { DeltaSender, type DeltaInfo, type SerializedDelta } from './zone-delta.ts'
import { DnsError } from './errors.ts'
import type { WorkerInit } from './worker.ts'
import type { ZoneOptions } from './zone.ts'

type FromWorker =
  | { readonly type: 'listening'; readonly port: number }
  | { readonly type: 'failed'; readonly message: string }
  | { readonly type: 'applied'; readonly version: number; readonly error: string | null }
  | {
      readonly type: 'query'
      readonly id: number
      readonly msg: Uint8Array
      readonly tcp: boolean
      readonly client: string
    }
  | { readonly type: 'log'; readonly line: string }
  | { readonly type: 'touched'; readonly keys: string[] }
  | { readonly type: 'closed' }

/** Answers a handed-over query from `client` on the main thread (the resolver with the forwarder). */
export type QueryHandler = (msg: Buffer, tcp: boolean, client: string) => Buffer | null | Promise<Buffer | null>

/** Cache keys a worker answered from its fast-path mirror (for the forwarder cache's LRU order). */
export type TouchHandler = (keys: readonly string[]) => void

const LEVELS: Record<number, 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal'> = {
  10: 'trace',
  20: 'debug',
  30: 'info',
  40: 'warn',
  50: 'error',
  60: 'fatal',
}

class Entry {
  readonly index: number
  readonly worker: Worker
  readonly counts: Float64Array
  readonly stats: Int32Array
  /** [0]: cached forwards this worker answered on its fast path. */
  readonly cacheHits: Float64Array
  listening = false
  /** Version of the last Snapshot applied; 0 before the first. */
  applied = 0
  error: string | null = null
  exited = false
  /** Holds no zone state (just started, or a failed apply reset it): the next post sends it everything. */
  needsFull = true
  /** What the last post to it carried. */
  update: DeltaInfo | null = null
  closed: Promise<void>

  constructor(index: number, worker: Worker, counts: Float64Array, stats: Int32Array, cacheHits: Float64Array) {
    this.index = index
    this.worker = worker
    this.counts = counts
    this.stats = stats
    this.cacheHits = cacheHits
    this.closed = new Promise((resolve) => worker.once('exit', () => resolve()))
  }
}

export class DnsWorkers {
  readonly #entries: Entry[] = []
  readonly #log: Logger
  readonly #handle: QueryHandler
  readonly #touch: TouchHandler
  readonly #allowRecursion: readonly string[]
  #posted = 0
  readonly #deltas = new DeltaSender()
  #closing = false
  port = 0

  private constructor(log: Logger, handle: QueryHandler, touch: TouchHandler, allowRecursion: readonly string[]) {
    this.#log = log
    this.#handle = handle
    this.#touch = touch
    this.#allowRecursion = allowRecursion
  }

  /** Starts `n` workers listening on host:port; throws DnsError MLT_DNS_LISTEN when one cannot bind. */
  static async start(
    n: number,
    host: string,
    port: number,
    zoneOptions: ZoneOptions,
    log: Logger,
    handle: QueryHandler,
    touch: TouchHandler,
    allowRecursion: readonly string[] = [],
  ): Promise<DnsWorkers> {
    const pool = new DnsWorkers(log, handle, touch, allowRecursion)
    try {
      pool.port = await pool.#spawn(0, host, port, zoneOptions)
      await Promise.all(Array.from({ length: n - 1 }, (_, i) => pool.#spawn(i + 1, host, pool.port, zoneOptions)))
    } catch (err) {
      await pool.close(Date.now())
      throw err
    }
    return pool
  }

  #spawn(index: number, host: string, port: number, zoneOptions: ZoneOptions): Promise<number> {
    const init: WorkerInit = {
      host,
      port,
      zoneOptions,
      counts: new SharedArrayBuffer(COUNTERS * 8),
      stats: new SharedArrayBuffer(4 * 4),
      cacheHits: new SharedArrayBuffer(8),
      logLevel: this.#log.level,
      allowRecursion: this.#allowRecursion,
    }
    const worker = new Worker(new URL('./worker.ts', import.meta.url), { workerData: init, name: `dns-${index}` })
    const e = new Entry(
      index,
      worker,
      new Float64Array(init.counts),
      new Int32Array(init.stats),
      new Float64Array(init.cacheHits),
    )
    this.#entries.push(e)
    return new Promise<number>((resolve, reject) => {
      worker.on('message', (m: FromWorker) => {
        switch (m.type) {
          case 'listening':
            e.listening = true
            resolve(m.port)
            break
          case 'failed':
            reject(new DnsError('MLT_DNS_LISTEN', m.message))
            break
          case 'applied':
            if (m.error === null) e.applied = m.version
            else e.needsFull = true
            e.error = m.error
            if (m.error)
              this.#log.error(
                { worker: index, err: m.error },
                'zone rebuild failed in a DNS worker; it serves the previous zone',
              )
            break
          case 'query':
            this.#query(e, m.id, m.msg, m.tcp, m.client)
            break
          case 'log':
            this.#relayLog(index, m.line)
            break
          case 'touched':
            this.#touch(m.keys)
            break
          case 'closed':
            void worker.terminate()
            break
        }
      })
      worker.on('error', (err) => {
        this.#log.error({ worker: index, err }, 'DNS worker failed')
        reject(new DnsError('MLT_DNS_LISTEN', `dns worker ${index}: ${err.message}`, { cause: err }))
      })
      worker.on('exit', (code) => {
        e.exited = true
        e.listening = false
        if (!this.#closing)
          this.#log.error({ worker: index, code }, 'DNS worker exited; its share of the queries goes to the others')
        reject(new DnsError('MLT_DNS_LISTEN', `dns worker ${index} exited with code ${code}`))
      })
    })
  }

  #query(e: Entry, id: number, msg: Uint8Array, tcp: boolean, client: string): void {
    const send = (b: Buffer | null) => {
      if (e.exited) return
      if (b === null) {
        e.worker.postMessage({ type: 'reply', id, buf: null })
        return
      }
      const copy = new Uint8Array(b)
      e.worker.postMessage({ type: 'reply', id, buf: copy }, [copy.buffer])
    }
    let r: Buffer | null | Promise<Buffer | null>
    try {
      r = this.#handle(Buffer.from(msg.buffer, msg.byteOffset, msg.byteLength), tcp, client)
    } catch (err) {
      this.#log.error({ err }, 'dns: answering failed')
      send(null)
      return
    }
    if (r instanceof Promise) {
      r.then(send, (err: unknown) => {
        this.#log.error({ err }, 'dns: answering failed')
        send(null)
      })
    } else send(r)
  }

  #relayLog(index: number, line: string): void {
    try {
      const {
        level,
        msg,
        time: _time,
        pid: _pid,
        hostname: _host,
        ...rest
      } = JSON.parse(line) as Record<string, unknown>
      const name = LEVELS[level as number] ?? 'info'
      this.#log[name]({ worker: index, ...rest }, String(msg ?? ''))
    } catch {
      // not JSON: ignore
    }
  }

  /**
   * A reply the forwarder cached, to every worker's fast-path mirror. Posted before the reply that filled it goes
   * back to the worker that asked (one port, in order), so that worker's next query for the name is a hit.
   */
  cacheStored(key: string, buf: Buffer, storedAt: number, expires: number): void {
    // Each thread has its own performance.now() origin: the entry travels as its age and what it has left.
    const now = performance.now()
    const age = now - storedAt
    const left = expires - now
    for (const e of this.#entries) {
      if (e.exited) continue
      // A copy of exactly the reply: a Buffer view would clone its whole pool.
      const copy = new Uint8Array(buf)
      e.worker.postMessage({ type: 'cache', key, buf: copy, age, left }, [copy.buffer])
    }
  }

  /** A key the forwarder's cache dropped (expired or evicted); null: all of them. */
  cacheRemoved(key: string | null): void {
    for (const e of this.#entries) if (!e.exited) e.worker.postMessage({ type: 'uncache', key })
  }

  /** Cached forwards the workers answered on their fast paths. */
  get cacheHits(): number {
    let n = 0
    for (const e of this.#entries) n += e.cacheHits[0]!
    return n
  }

  /**
   * Brings every worker to `snapshot`: the ServiceStates and PodStates that changed since the last post, serialized
   * once (dns/zone-delta.ts); the full state only to a worker that holds none.
   */
  post(snapshot: Snapshot): void {
    this.#posted = snapshot.version
    const delta = this.#deltas.next(snapshot)
    let full: SerializedDelta | null = null
    for (const e of this.#entries) {
      if (e.exited) continue
      let m = delta
      if (e.needsFull) {
        full ??= this.#deltas.full()
        m = full
        e.needsFull = false
      }
      // A copy per worker, transferred: the worker deserializes it.
      const data = new Uint8Array(m.data)
      e.worker.postMessage({ type: 'zone', data }, [data.buffer])
      e.update = m.info
    }
  }

  /** Every worker is listening and has applied the last posted Snapshot (at least one). */
  get ready(): boolean {
    if (this.#posted === 0) return false
    return this.#entries.every((e) => e.listening && !e.exited && e.applied > 0)
  }

  /** The oldest Snapshot version a worker serves (0 before every worker has one). */
  get appliedVersion(): number {
    let v = Infinity
    for (const e of this.#entries) v = Math.min(v, e.exited ? 0 : e.applied)
    return v === Infinity ? 0 : v
  }

  get connections(): number {
    let n = 0
    for (const e of this.#entries) n += Atomics.load(e.stats, 0)
    return n
  }

  /** Each worker's (qtype, rcode) counters. */
  get counts(): readonly Float64Array[] {
    return this.#entries.map((e) => e.counts)
  }

  status(): {
    worker: number
    listening: boolean
    snapshotVersion: number
    queries: number
    cacheHits: number
    update: DeltaInfo | null
    error: string | null
  }[] {
    return this.#entries.map((e) => ({
      worker: e.index,
      listening: e.listening && !e.exited,
      snapshotVersion: e.applied,
      // Queries this worker answered itself (handed-over ones are counted by the main thread).
      queries: e.counts.reduce((a, b) => a + b, 0),
      // Cached forwards it answered on its fast path (included in queries).
      cacheHits: e.cacheHits[0]!,
      // The last zone update posted to it: full state or changes only, objects and bytes.
      update: e.update,
      error: e.error,
    }))
  }

  /** Each worker stops accepting and lets TCP connections finish until `deadline`; then the threads end. */
  async close(deadline: number): Promise<void> {
    this.#closing = true
    for (const e of this.#entries) if (!e.exited) e.worker.postMessage({ type: 'close', deadline })
    const wait = Math.max(0, deadline - Date.now()) + 1000
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, wait)))
    await Promise.race([Promise.all(this.#entries.map((e) => e.closed)), timeout])
    clearTimeout(timer)
    await Promise.all(this.#entries.map((e) => (e.exited ? undefined : e.worker.terminate())))
  }
}
