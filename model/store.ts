// The Store: holds the inputs (validated objects from config/, verdicts from health/), builds a Snapshot when any of
// them changes and hands it to every subscriber. Changes arriving in the same tick are coalesced into one build, so a
// reload of ten files or a burst of probe results costs one Snapshot, published well within the 100 ms the planes
// promise.

import type { KubeObject } from './objects.ts'
import type { ObjectError, PodHealth, Snapshot } from './snapshot.ts'
import { buildSnapshot, type AllocationState, type BuildOptions } from './build-snapshot.ts'

export type Subscriber = (snapshot: Snapshot) => void

export class Store {
  #options: BuildOptions
  #objects: readonly KubeObject[] = []
  #errors: readonly ObjectError[] = []
  #health = new Map<string, PodHealth>()
  #ejected = new Map<string, string>()
  #liveness = new Map<string, boolean>()
  #liveNodes: readonly string[] | null = null
  #l2Owners: Readonly<Record<string, string>> | null = null
  #allocations: AllocationState | null = null
  #current: Snapshot | null = null
  #subscribers = new Set<Subscriber>()
  #loaded = false
  #scheduled = false
  #version = 0

  #onSubscriberError: (err: unknown) => void

  constructor(options: BuildOptions & { onSubscriberError?: (err: unknown) => void }) {
    this.#options = options
    this.#onSubscriberError =
      options.onSubscriberError ??
      ((err) =>
        queueMicrotask(() => {
          throw err
        }))
  }

  /** The last published Snapshot; null until the first configuration has been loaded. */
  get current(): Snapshot | null {
    return this.#current
  }

  /** Calls `fn` with every new Snapshot, and at once with the current one if there is one. Returns an unsubscribe. */
  subscribe(fn: Subscriber): () => void {
    this.#subscribers.add(fn)
    if (this.#current) fn(this.#current)
    return () => this.#subscribers.delete(fn)
  }

  /** The whole configuration from the providers: every valid object and every error currently in force. */
  setObjects(objects: readonly KubeObject[], errors: readonly ObjectError[]): void {
    this.#objects = objects
    this.#errors = errors
    this.#loaded = true
    this.#schedule()
  }

  /** A health verdict for a Pod ("namespace/name"); null forgets it (the Pod is gone or has no probes). */
  setPodHealth(podKey: string, health: PodHealth | null): void {
    if (health === null) {
      if (!this.#health.delete(podKey)) return
    } else {
      const old = this.#health.get(podKey)
      if (
        old &&
        old.ready === health.ready &&
        old.started === health.started &&
        old.restartCount === health.restartCount
      ) {
        return
      }
      this.#health.set(podKey, health)
    }
    this.#schedule()
  }

  /** Passive ejection of one endpoint (key from `ejectionKey`); reason null brings it back. */
  setEjected(key: string, reason: string | null): void {
    if (reason === null) {
      if (!this.#ejected.delete(key)) return
    } else {
      if (this.#ejected.get(key) === reason) return
      this.#ejected.set(key, reason)
    }
    this.#schedule()
  }

  /** Liveness of another node (membership/); null forgets it (the Node is gone: never probed counts as alive). */
  setNodeAlive(name: string, alive: boolean | null): void {
    if (alive === null) {
      if (!this.#liveness.delete(name)) return
    } else {
      if (this.#liveness.get(name) === alive) return
      this.#liveness.set(name, alive)
    }
    this.#schedule()
  }

  /**
   * The nodes holding an etcd lease (etcd mode, store/node-lease.ts), this node only while it holds its own; null
   * (file mode) leaves the election to declared Nodes and membership/.
   */
  setLiveNodes(names: readonly string[] | null): void {
    const sorted = names === null ? null : [...names].sort()
    const old = this.#liveNodes
    if (old === sorted || (old && sorted && old.length === sorted.length && old.every((n, i) => n === sorted[i])))
      return
    this.#liveNodes = sorted
    this.#schedule()
  }

  /** etcd mode: the recorded LoadBalancer address owners (store/l2-owners.ts); null: no ownership records. */
  setL2Owners(owners: Readonly<Record<string, string>> | null): void {
    this.#l2Owners = owners
    this.#schedule()
  }

  /** Builds and publishes now, synchronously (tests and `meshlet check`). */
  flush(): Snapshot | null {
    this.#scheduled = false
    if (!this.#loaded) return null
    const { snapshot: built, allocations } = buildSnapshot(
      {
        version: ++this.#version,
        objects: this.#objects,
        errors: this.#errors,
        health: this.#health,
        ejected: this.#ejected,
        nodeLiveness: this.#liveness,
        liveNodes: this.#liveNodes,
        previous: this.#allocations,
      },
      this.#options,
    )
    this.#allocations = allocations
    const snapshot = this.#l2Owners === null ? built : { ...built, l2Owners: this.#l2Owners }
    this.#current = snapshot
    for (const fn of this.#subscribers) {
      try {
        fn(snapshot)
      } catch (err) {
        // A plane that throws while indexing must not stop the others from getting the Snapshot; it keeps serving
        // its previous index and the error is reported.
        this.#onSubscriberError(err)
      }
    }
    return snapshot
  }

  #schedule(): void {
    if (this.#scheduled) return
    this.#scheduled = true
    setImmediate(() => {
      if (this.#scheduled) this.flush()
    })
  }
}
