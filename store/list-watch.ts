// List a prefix at one revision, then watch it from the next: the informer pattern of client-go (list + watch
// from resourceVersion), which is how every node sees every change exactly once and in order.
//
//   range(prefix) ──► reset(kvs) at revision R ──► watch(prefix, start R+1) ──► put/delete events in revision order
//        ▲                                                                          │
//        └──────── watch cancelled (compaction: R+1 no longer kept), relist ◄──────┘
//
// etcd3's watch manager reconnects a broken stream itself and resumes from the revision it last saw, so an etcd
// restart or a leader change costs no relist; only a cancelled watch (the revision was compacted away, or the server
// cancelled it) does.

import type { Etcd3, IKeyValue, Watcher } from 'etcd3'
import type { Logger } from 'pino'

export interface ListWatchHandlers {
  /** The whole prefix at one revision: replaces everything known. */
  reset(kvs: readonly IKeyValue[], revision: bigint): void
  put(kv: IKeyValue): void
  delete(kv: IKeyValue): void
  /** The watch stream went down (false) or is up again (true). */
  connection(up: boolean, err: unknown): void
}

export class ListWatch {
  readonly #client: Etcd3
  readonly #prefix: string
  readonly #h: ListWatchHandlers
  readonly #log: Logger
  #watcher: Watcher | null = null
  #closed = false
  #retry: NodeJS.Timeout | null = null
  /** The revision everything known is at (the list's, then each event's mod_revision). */
  revision = 0n
  relists = 0

  constructor(client: Etcd3, prefix: string, handlers: ListWatchHandlers, log: Logger) {
    this.#client = client
    this.#prefix = prefix
    this.#h = handlers
    this.#log = log
  }

  /** Resolves after the first list and watch; until then it retries every second (etcd may start after meshlet). */
  start(): Promise<void> {
    return new Promise((resolve) => this.#listAndWatch(resolve))
  }

  #listAndWatch(done: () => void): void {
    if (this.#closed) return done()
    this.#run().then(done, (err: unknown) => {
      this.#h.connection(false, err)
      this.#log.warn({ err: String(err), prefix: this.#prefix }, 'etcd list failed: retrying in 1 s')
      this.#retry = setTimeout(() => this.#listAndWatch(done), 1000)
    })
  }

  async #run(): Promise<void> {
    const res = await this.#client.getAll().prefix(this.#prefix).exec()
    if (this.#closed) return
    this.revision = BigInt(res.header.revision)
    this.#h.reset(res.kvs, this.revision)
    const watcher = await this.#client
      .watch()
      .prefix(this.#prefix)
      .startRevision(String(this.revision + 1n))
      .create()
    if (this.#closed) {
      await watcher.cancel()
      return
    }
    this.#watcher = watcher
    this.#h.connection(true, null)
    watcher.on('put', (kv: IKeyValue) => {
      this.#seen(kv)
      this.#h.put(kv)
    })
    watcher.on('delete', (kv: IKeyValue) => {
      this.#seen(kv)
      this.#h.delete(kv)
    })
    watcher.on('disconnected', (err: unknown) => this.#h.connection(false, err))
    watcher.on('connected', () => this.#h.connection(true, null))
    watcher.on('error', (err: unknown) => {
      // A cancelled watch: after a compaction the revision we need is gone, so list again and watch from there.
      this.#log.warn(
        { err: String(err), prefix: this.#prefix, revision: String(this.revision) },
        'etcd watch cancelled: relisting',
      )
      if (this.#watcher !== watcher) return
      this.#watcher = null
      void watcher.cancel().catch(() => {})
      this.relists++
      this.#listAndWatch(() => {})
    })
  }

  #seen(kv: IKeyValue): void {
    const r = BigInt(kv.mod_revision)
    if (r > this.revision) this.revision = r
  }

  async close(): Promise<void> {
    this.#closed = true
    if (this.#retry) clearTimeout(this.#retry)
    const w = this.#watcher
    this.#watcher = null
    if (w) await w.cancel().catch(() => {})
  }
}
