// The etcd provider: every object under PREFIX/objects/, validated exactly as a manifest file's documents are, handed
// to the same callback the file provider (config/watch.ts) feeds, so the Store → Snapshot path does not know where
// objects came from. It is listed in bin/'s planes as `store`, which is how /readyz and /status show its state.
//
// Static stability: when etcd cannot be reached, nothing is withdrawn. The objects last seen stay in force, the
// planes keep serving the last Snapshot, and /readyz stays 200 with a `degraded: store: …` line (taking a node out
// of rotation because its control plane is away would turn an etcd outage into a data-path outage). When etcd
// returns, the watch resumes from the revision last seen.

import type { Etcd3 } from 'etcd3'
import type { Logger } from 'pino'
import { Counter, Gauge, type Registry } from 'prom-client'
import type { KubeObject } from '../model/objects.ts'
import type { Plane } from '../model/plane.ts'
import type { ObjectError } from '../model/snapshot.ts'
import { validateDocument } from '../model/validate.ts'
import { ListWatch } from './list-watch.ts'
import { objectsPrefix } from './keys.ts'

interface Entry {
  readonly id: string | null
  readonly object: KubeObject | null
  readonly errors: readonly ObjectError[]
}

export interface EtcdSourceOptions {
  readonly client: Etcd3
  readonly prefix: string
  readonly log: Logger
  readonly metrics: Registry
  /** The whole configuration after each change (coalesced per tick), as ManifestSource's onUpdate. */
  readonly onUpdate: (objects: readonly KubeObject[], errors: readonly ObjectError[]) => void
}

/** One stored value → what validating it gives; the key stands in for the file name in errors. */
export function entryOf(key: string, value: Buffer): Entry {
  const source = { file: key, doc: 0 }
  let doc: unknown
  try {
    doc = JSON.parse(value.toString('utf8'))
  } catch {
    // No quote of the value: it may be a Secret.
    const error = {
      source,
      object: null,
      path: '',
      code: 'MLT_CONFIG_PARSE' as const,
      message: 'stored value is not a JSON object',
    }
    return { id: null, object: null, errors: [error] }
  }
  const r = validateDocument(doc, source)
  return { id: r.id, object: r.object, errors: r.errors }
}

/**
 * The stored entries in key order → the objects and errors the Store gets. Key order, so that every node (and
 * `meshlet get --store`) hands the Store the same list: allocation breaks ties by order of appearance.
 */
export function assemble(entries: ReadonlyMap<string, Entry>): { objects: KubeObject[]; errors: ObjectError[] } {
  const objects: KubeObject[] = []
  const errors: ObjectError[] = []
  const seen = new Map<string, string>()
  for (const key of [...entries.keys()].sort()) {
    const e = entries.get(key)!
    errors.push(...e.errors)
    if (e.object === null) continue
    const first = e.id === null ? undefined : seen.get(e.id)
    if (first !== undefined) {
      errors.push({
        source: { file: key, doc: 0 },
        object: e.id,
        path: '',
        code: 'MLT_CONFIG_DUPLICATE',
        message: `defined twice: already stored under ${first}; this definition is ignored`,
      })
      continue
    }
    if (e.id !== null) seen.set(e.id, key)
    objects.push(e.object)
  }
  return { objects, errors }
}

export class EtcdSource implements Plane {
  readonly name = 'store'
  readonly #o: EtcdSourceOptions
  readonly #log: Logger
  readonly #entries = new Map<string, Entry>()
  readonly #lw: ListWatch
  readonly #events: Counter<'type'>
  readonly #connected: Gauge
  #listed = false
  #scheduled = false
  /** Since when the watch stream is down (ms), null while it is up. */
  #downSince: number | null = null
  #lastError: string | null = null
  /** Other reasons the node is cut off (the node lease's keepalives failing), by who reports them. */
  readonly #otherDown = new Map<string, string>()

  constructor(o: EtcdSourceOptions) {
    this.#o = o
    this.#log = o.log
    this.#events = new Counter({
      name: 'meshlet_store_watch_events_total',
      help: 'etcd watch events on PREFIX/objects/, by type (put, delete).',
      labelNames: ['type'],
      registers: [o.metrics],
    })
    this.#connected = new Gauge({
      name: 'meshlet_store_connected',
      help: '1 while the watch on etcd is up, 0 while this node serves its last Snapshot without it.',
      registers: [o.metrics],
    })
    this.#lw = new ListWatch(
      o.client,
      objectsPrefix(o.prefix),
      {
        reset: (kvs) => {
          this.#entries.clear()
          for (const kv of kvs) this.#entries.set(kv.key.toString(), entryOf(kv.key.toString(), kv.value))
          this.#listed = true
          this.#publish(true)
        },
        put: (kv) => {
          this.#events.inc({ type: 'put' })
          this.#entries.set(kv.key.toString(), entryOf(kv.key.toString(), kv.value))
          this.#publish(false)
        },
        delete: (kv) => {
          this.#events.inc({ type: 'delete' })
          if (this.#entries.delete(kv.key.toString())) this.#publish(false)
        },
        connection: (up, err) => this.#connection(up, err),
      },
      o.log,
    )
  }

  /** Resolves once the first list has been published (it waits, retrying, while etcd cannot be reached). */
  start(): Promise<void> {
    return this.#lw.start()
  }

  /** Another part of the node (the lease) reports being cut off from etcd (reason) or back (null). */
  setCutOff(who: string, reason: string | null): void {
    if (reason === null) this.#otherDown.delete(who)
    else this.#otherDown.set(who, reason)
  }

  #connection(up: boolean, err: unknown): void {
    if (up) {
      if (this.#downSince !== null)
        this.#log.info(
          { downSeconds: (Date.now() - this.#downSince) / 1000, revision: String(this.#lw.revision) },
          'etcd reachable again: watch resumed',
        )
      this.#downSince = null
      this.#connected.set(1)
      return
    }
    this.#lastError = err instanceof Error ? err.message : String(err)
    if (this.#downSince === null) {
      this.#downSince = Date.now()
      this.#log.warn({ err: this.#lastError }, 'etcd unreachable: serving the last Snapshot')
    }
    this.#connected.set(0)
  }

  #publish(now: boolean): void {
    if (now) return this.#emit()
    if (this.#scheduled) return
    this.#scheduled = true
    // A transaction of 50 objects arrives as 50 events in one watch response: one update for all of them.
    setImmediate(() => this.#emit())
  }

  #emit(): void {
    this.#scheduled = false
    const { objects, errors } = assemble(this.#entries)
    this.#o.onUpdate(objects, errors)
  }

  ready(): boolean {
    return this.#listed
  }

  unready(): readonly string[] {
    return this.#listed ? [] : [`etcd not listed yet${this.#lastError ? `: ${this.#lastError}` : ''}`]
  }

  /** Why the node serves its last Snapshot instead of etcd's present state; empty while connected. */
  degraded(): readonly string[] {
    const out: string[] = []
    if (this.#downSince !== null)
      out.push(
        `etcd unreachable since ${new Date(this.#downSince).toISOString()} (${this.#lastError ?? 'no answer'}): serving the last Snapshot, revision ${this.#lw.revision}`,
      )
    for (const [who, why] of this.#otherDown) out.push(`${who}: ${why}`)
    return out
  }

  status() {
    return {
      prefix: this.#o.prefix,
      connected: this.#downSince === null && this.#listed,
      unreachableSince: this.#downSince === null ? null : new Date(this.#downSince).toISOString(),
      lastError: this.#lastError,
      revision: String(this.#lw.revision),
      relists: this.#lw.relists,
      objects: this.#entries.size,
      degraded: this.degraded(),
    }
  }

  async close(): Promise<void> {
    await this.#lw.close()
  }
}

/** What the store plane shows in /status (the tests read it through this type). */
export type StoreStatus = ReturnType<EtcdSource['status']>
