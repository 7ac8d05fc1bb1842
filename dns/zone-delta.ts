// Snapshots to DNS workers as deltas (issues 14 and 17): a worker keeps its own ZoneIndex, so what it needs from a
// new Snapshot is only the ServiceStates and PodStates that changed (a changed one is a new object: the Snapshot
// build shares unchanged ones) and the namespace list when it changed. Posting the whole Snapshot to each worker
// cloned every object of the configuration per worker per change, the dominant cost of a flip at 10,000 Services;
// a delta costs what changed. The full state is sent only to a worker that has none yet (its start) or that lost
// it (a failed apply resets it).
//
//   main thread                                           worker
//   DeltaSender.next(snapshot) ─ v8.serialize once ──▶ N copies ──▶ DeltaReceiver.apply ─▶ ZoneIndex.apply
//   (identity diff against the last one sent)                   (its maps of ServiceState / PodState by key)

import { deserialize, serialize } from 'node:v8'
import type { PodState, ServiceState, Snapshot } from '../model/snapshot.ts'
import { ZoneIndex, type Zone, type ZoneOptions } from './zone.ts'

interface ZoneDelta {
  /** The receiver drops what it holds first. */
  readonly full: boolean
  readonly version: number
  readonly builtAt: number
  /** null: unchanged. */
  readonly namespaces: readonly string[] | null
  /** Added or changed. */
  readonly services: readonly ServiceState[]
  readonly removedServices: readonly string[]
  readonly pods: readonly PodState[]
  readonly removedPods: readonly string[]
}

/** What one message carried (for /status): objects and serialized bytes. */
export interface DeltaInfo {
  readonly full: boolean
  readonly services: number
  readonly pods: number
  readonly bytes: number
}

export interface SerializedDelta {
  readonly data: Buffer
  readonly info: DeltaInfo
}

function encode(d: ZoneDelta): SerializedDelta {
  const data = serialize(d)
  const services = d.services.length + d.removedServices.length
  const pods = d.pods.length + d.removedPods.length
  return { data, info: { full: d.full, services, pods, bytes: data.length } }
}

/** Items of `list` not held as they are (by identity) into `changed`, held keys no longer listed into `removed`. */
function diff<T extends { readonly key: string }>(
  list: readonly T[],
  held: Map<string, { state: T; mark: number }>,
  mark: number,
  changed: T[],
  removed: string[],
): void {
  for (const item of list) {
    const h = held.get(item.key)
    if (h?.state !== item) {
      changed.push(item)
      held.set(item.key, { state: item, mark })
    } else h.mark = mark
  }
  for (const [key, h] of held) {
    if (h.mark === mark) continue
    held.delete(key)
    removed.push(key)
  }
}

/** Main-thread side: remembers what it last described and diffs each new Snapshot against it by identity. */
export class DeltaSender {
  readonly #services = new Map<string, { state: ServiceState; mark: number }>()
  readonly #pods = new Map<string, { state: PodState; mark: number }>()
  #namespaces: readonly string[] = []
  #version = 0
  #builtAt = 0
  #mark = 0

  /** The changes from the Snapshot last passed here to `snapshot` (the first call: everything). */
  next(snapshot: Snapshot): SerializedDelta {
    const mark = ++this.#mark
    const services: ServiceState[] = []
    const removedServices: string[] = []
    const pods: PodState[] = []
    const removedPods: string[] = []
    diff(snapshot.services, this.#services, mark, services, removedServices)
    diff(snapshot.pods, this.#pods, mark, pods, removedPods)
    const same =
      snapshot.namespaces.length === this.#namespaces.length &&
      snapshot.namespaces.every((ns, i) => ns === this.#namespaces[i])
    this.#namespaces = snapshot.namespaces
    this.#version = snapshot.version
    this.#builtAt = snapshot.builtAt
    return encode({
      full: false,
      version: snapshot.version,
      builtAt: snapshot.builtAt,
      namespaces: same ? null : snapshot.namespaces,
      services,
      removedServices,
      pods,
      removedPods,
    })
  }

  /** Everything last described, for a worker that holds nothing. */
  full(): SerializedDelta {
    return encode({
      full: true,
      version: this.#version,
      builtAt: this.#builtAt,
      namespaces: this.#namespaces,
      services: [...this.#services.values()].map((h) => h.state),
      removedServices: [],
      pods: [...this.#pods.values()].map((h) => h.state),
      removedPods: [],
    })
  }
}

/** Worker side: the state the deltas describe, and the zone index built from it. */
export class DeltaReceiver {
  readonly #options: ZoneOptions
  #index: ZoneIndex
  readonly #services = new Map<string, ServiceState>()
  readonly #pods = new Map<string, PodState>()
  #namespaces: readonly string[] = []
  /** Nothing applied since the start or a failure: only a full message is usable. */
  #empty = true

  constructor(options: ZoneOptions) {
    this.#options = options
    this.#index = new ZoneIndex(options)
  }

  /**
   * Applies one message; returns the zone with the names that changed (null: serve it as a new zone), or throws. After
   * a throw it holds nothing and waits for a full message (deltas before it throw too).
   */
  apply(data: Uint8Array, previousSerial: number): { zone: Zone; changed: string[] | null; version: number } {
    const d = deserialize(data) as ZoneDelta
    try {
      const rebuilt = d.full || this.#empty
      if (d.full) {
        this.#services.clear()
        this.#pods.clear()
        this.#index = new ZoneIndex(this.#options)
      } else if (this.#empty) throw new Error('a delta without the full state it applies to')
      for (const key of d.removedServices) this.#services.delete(key)
      for (const s of d.services) this.#services.set(s.key, s)
      for (const key of d.removedPods) this.#pods.delete(key)
      for (const p of d.pods) this.#pods.set(p.key, p)
      if (d.namespaces !== null) this.#namespaces = d.namespaces
      const { zone, changed } = this.#index.apply(
        {
          services: [...this.#services.values()],
          pods: [...this.#pods.values()],
          namespaces: this.#namespaces,
          builtAt: d.builtAt,
        },
        previousSerial,
      )
      this.#empty = false
      return { zone, changed: rebuilt ? null : changed, version: d.version }
    } catch (err) {
      this.#empty = true
      this.#services.clear()
      this.#pods.clear()
      this.#index = new ZoneIndex(this.#options)
      throw Object.assign(err as Error, { version: d.version })
    }
  }
}
