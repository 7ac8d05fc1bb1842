// The Store: holds the inputs (validated objects from config/, verdicts from health/), builds a Snapshot when any of
// them changes and hands it to every subscriber. Changes arriving in the same tick are coalesced into one build, so a
// reload of ten files or a burst of probe results costs one Snapshot, published well within the 100 ms the planes
// promise.

import type { KubeObject } from './objects.ts'
import type { ObjectError, PodHealth, Snapshot } from './snapshot.ts'
import { buildSnapshotSteps, type AllocationState, type BuildOptions, type BuildResult } from './build-snapshot.ts'

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
  /** A build spread over turns of the event loop (issue 14), until it is published. */
  #building: Generator<void, BuildResult> | null = null
  /** The maps the build in progress reads; a setter copies one before changing it. */
  #frozen: {
    readonly health: Map<string, PodHealth>
    readonly ejected: Map<string, string>
    readonly liveness: Map<string, boolean>
  } | null = null

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
    // A build in progress reads the maps it was given: later changes go into a copy (the next build's input), made
    // once per build.
    if (this.#health === this.#frozen?.health) this.#health = new Map(this.#health)
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
    if (this.#ejected === this.#frozen?.ejected) this.#ejected = new Map(this.#ejected)
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
    if (this.#liveness === this.#frozen?.liveness) this.#liveness = new Map(this.#liveness)
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

  /**
   * Builds and publishes now, synchronously (tests and `meshlet check`). A build in progress over turns of the event
   * loop is finished first (and published); then, if anything changed since it started, one more is built.
   */
  flush(): Snapshot | null {
    if (this.#building) {
      const steps = this.#building
      let r = steps.next()
      while (r.done !== true) r = steps.next()
      this.#publish(r.value)
      if (!this.#scheduled) return this.#current
    }
    this.#scheduled = false
    if (!this.#loaded) return null
    const steps = this.#start()
    let r = steps.next()
    while (r.done !== true) r = steps.next()
    this.#publish(r.value)
    return this.#current
  }

  /** Starts a build from the inputs as they are now; `#building` holds it until it is published. */
  #start(): Generator<void, BuildResult> {
    const steps = buildSnapshotSteps(
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
    this.#building = steps
    this.#frozen = { health: this.#health, ejected: this.#ejected, liveness: this.#liveness }
    return steps
  }

  #publish({ snapshot: built, allocations }: BuildResult): void {
    this.#building = null
    this.#frozen = null
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
  }

  #schedule(): void {
    if (this.#scheduled) return
    this.#scheduled = true
    // While a build runs over several turns, its own slices pick the change up when it is published.
    if (this.#building === null) setImmediate(() => this.#slice())
  }

  /**
   * One turn's share of the scheduled build (issue 14): at most SLICE_MS of building, then the event loop serves
   * DNS, the listeners and /healthz before the next slice. A build that fits (a flip, an edit) is published in its
   * first turn; the first build at 10,000 Services takes about a hundred. Nothing is published until it is whole.
   */
  #slice(): void {
    let steps = this.#building
    if (steps === null) {
      if (!this.#scheduled) return
      this.#scheduled = false
      if (!this.#loaded) return
      steps = this.#start()
    }
    // A small configuration builds in one turn whatever the clock says (a cold start can take over SLICE_MS), so it
    // is published in the tick after the change, as it always was.
    const until = this.#objects.length < SLICE_MIN_OBJECTS ? Infinity : performance.now() + SLICE_MS
    let r: IteratorResult<void, BuildResult>
    try {
      r = steps.next()
      while (r.done !== true && performance.now() < until) r = steps.next()
    } catch (err) {
      // A build that throws is a bug; the next change starts a fresh build instead of resuming a dead one.
      this.#building = null
      this.#frozen = null
      throw err
    }
    if (r.done !== true) {
      setImmediate(() => this.#slice())
      return
    }
    this.#publish(r.value)
    if (this.#scheduled) setImmediate(() => this.#slice())
  }
}

/** Longest share of one event-loop turn a build takes before yielding (issue 14: no turn over ~20 ms). */
const SLICE_MS = 10
/** Objects from which a build may be spread over several turns: below this it costs a few milliseconds. */
const SLICE_MIN_OBJECTS = 1000
