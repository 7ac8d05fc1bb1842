// health/: kubelet-style probes and passive ejection (specs/l4-health.md §6-7; README.md). A writer, not a router:
// it subscribes to the Store, runs one worker per (Pod, container, probe kind), and writes each Pod's verdict
// (`setPodHealth`) and each ejection (`setEjected`) back; every plane then drops the endpoint from the next Snapshot.

import { publishApplied } from '../model/diagnostics.ts'
import type { Plane, PlaneContext } from '../model/plane.ts'
import type { PodHealth, PodState, Snapshot, UpstreamReporter } from '../model/snapshot.ts'
import { findByKey } from '../model/snapshot.ts'
import { registerHealthMetrics, type HealthMetrics } from './metrics.ts'
import { OutlierDetector } from './outlier.ts'
import { PodProbes, podHasProbes, type PodProbesEnv } from './pod-probes.ts'

export class HealthPlane implements Plane {
  readonly name = 'health'
  readonly reporter: UpstreamReporter
  readonly #ctx: PlaneContext
  readonly #metrics: HealthMetrics
  readonly #outlier: OutlierDetector
  readonly #env: PodProbesEnv
  readonly #pods = new Map<string, PodProbes>()
  #unsubscribe: (() => void) | null = null
  #applied = false
  /** Version of the Snapshot applied last. */
  #version = 0
  #closed = false
  #warnedExec = false

  constructor(ctx: PlaneContext) {
    this.#ctx = ctx
    this.#metrics = registerHealthMetrics(ctx.metrics)
    this.#outlier = new OutlierDetector(ctx.store, ctx.log.child({ sub: 'outlier' }), this.#metrics)
    this.reporter = this.#outlier
    this.#env = {
      log: ctx.log,
      metrics: this.#metrics,
      execPrefix: ctx.options.execPrefix,
      onLivenessFailure: ctx.options.onLivenessFailure,
      publish: (key: string, health: PodHealth) => {
        if (!this.#closed) ctx.store.setPodHealth(key, health)
      },
      readinessPassed: (key: string) => this.#outlier.readinessPassed(key),
    }
  }

  start(): void {
    this.#unsubscribe = this.#ctx.store.subscribe((s) => {
      const started = performance.now()
      this.#apply(s)
      publishApplied('health', s.version, started)
    })
  }

  #apply(snapshot: Snapshot): void {
    if (this.#closed) return
    // Issue 14: a Snapshot that follows the last one applied says what changed; Pods and Services it does not name
    // are the same objects, so their workers and outlier state stay as they are, and are not even looked at.
    const ch = snapshot.version === this.#version + 1 ? snapshot.changes : undefined
    this.#version = snapshot.version
    let execProbes = 0
    if (ch) {
      for (const key of ch.pods) execProbes += this.#applyPod(key, findByKey(snapshot.pods, key))
    } else {
      const seen = new Set<string>()
      for (const ps of snapshot.pods) {
        seen.add(ps.key)
        execProbes += this.#applyPod(ps.key, ps)
      }
      for (const [key, runner] of this.#pods) if (!seen.has(key)) this.#remove(key, runner)
    }
    if (execProbes > 0 && this.#ctx.options.execPrefix === null && !this.#warnedExec) {
      this.#warnedExec = true
      this.#ctx.log.warn(
        { probes: execProbes },
        'exec probes run their commands on this host, outside any container (set --exec-prefix to run them elsewhere)',
      )
    }
    if (!ch || ch.pods.size > 0) {
      let workers = 0
      for (const r of this.#pods.values()) workers += r.workerCount
      this.#metrics.workers.set(workers)
    }
    if (!ch) this.#outlier.update(snapshot)
    else if (ch.services.size > 0) this.#outlier.update(snapshot, ch.services)
    this.#applied = true
  }

  /** Starts, updates or stops the workers of one Pod (undefined: gone); returns its exec probes when (re)started. */
  #applyPod(key: string, ps: PodState | undefined): number {
    const existing = this.#pods.get(key)
    if (ps === undefined) {
      if (existing) this.#remove(key, existing)
      return 0
    }
    // Pods are immutable and shared between Snapshots until a reload replaces them: same object, nothing to do.
    if (existing && existing.pod === ps.pod) return 0
    if (!podHasProbes(ps.pod)) {
      if (existing) this.#remove(key, existing)
      return 0
    }
    if (existing) existing.update(ps.pod)
    else {
      const runner = new PodProbes(key, ps.pod, this.#env)
      this.#pods.set(key, runner)
      runner.update(ps.pod)
    }
    let execProbes = 0
    for (const c of ps.pod.spec.containers) {
      for (const p of [c.readinessProbe, c.livenessProbe, c.startupProbe]) if (p?.handler.type === 'exec') execProbes++
    }
    return execProbes
  }

  #remove(key: string, runner: PodProbes): void {
    runner.stop()
    this.#pods.delete(key)
    this.#ctx.store.setPodHealth(key, null)
  }

  ready(): boolean {
    return this.#applied
  }

  status() {
    return {
      pods: [...this.#pods.values()].map((r) => r.status()),
      outlier: this.#outlier.status(),
    }
  }

  async close(_deadline: number): Promise<void> {
    this.#closed = true
    this.#unsubscribe?.()
    for (const r of this.#pods.values()) r.stop()
    this.#pods.clear()
    this.#outlier.close()
  }
}

/** What the health plane shows in /status (admin serialises it as is; the tests read it through this type). */
export type HealthStatus = ReturnType<HealthPlane['status']>

export async function startHealth(ctx: PlaneContext): Promise<HealthPlane> {
  const plane = new HealthPlane(ctx)
  plane.start()
  return plane
}
