// One worker per (Pod, container, probe kind): kubelet's classic worker loop (kubernetes pkg/kubelet/prober/
// worker_legacy.go; specs/l4-health.md §6.3). It probes once at start and then on every periodSeconds tick, never
// overlaps itself (a tick that finds a probe in flight leaves one pending run, like a Go ticker's single buffered
// tick), and turns "N consecutive identical results" into a state. What the state means for the Pod is the owner's
// business (pod-probes.ts).

import type { Counter, Histogram } from 'prom-client'
import type { Probe } from '../model/objects.ts'
import type { HealthMetrics } from './metrics.ts'
import { failure, type ProbeOutcome } from './handlers/outcome.ts'

export type ProbeKind = 'readiness' | 'liveness' | 'startup'
export type ProbeState = 'success' | 'failure' | 'unknown'

/** Runs one attempt; never throws (handlers turn every error into a failure). */
export type ProbeFn = (timeoutMs: number) => Promise<ProbeOutcome>

export interface WorkerOwner {
  /** Date.now() when the container (re)started: initialDelaySeconds counts from here. */
  readonly containerStartedAt: number
  isStarted(container: string): boolean
  /** Called after every recorded result; `changed` when the state flipped. */
  onResult(worker: ProbeWorker, outcome: ProbeOutcome, changed: boolean): void
}

export interface Transition {
  readonly at: string
  readonly from: ProbeState
  readonly to: ProbeState
  readonly reason: string
}

/** Node's timers may fire a few ms before the whole second the kubelet compares against; never skip a tick for that. */
const DELAY_SLACK_MS = 50

export function initialState(kind: ProbeKind): ProbeState {
  return kind === 'readiness' ? 'failure' : kind === 'liveness' ? 'success' : 'unknown'
}

export class ProbeWorker {
  readonly kind: ProbeKind
  readonly container: string
  readonly probe: Probe
  /** What the worker was built from; a reload that changes it replaces the worker. */
  readonly fingerprint: string
  readonly #fn: ProbeFn
  readonly #owner: WorkerOwner
  readonly #onSuccess: Counter.Internal
  readonly #onWarning: Counter.Internal
  readonly #onFailure: Counter.Internal
  readonly #duration: Histogram.Internal<'kind' | 'type'>

  #state: ProbeState
  /** The last raw result and how many times in a row it came (kubelet's lastResult/resultRun). */
  #last: ProbeState = 'unknown'
  #run = 0
  #lastMessage = ''
  #lastProbeAt: number | null = null
  #lastTransition: Transition | null = null
  /** Liveness or startup failed: no more probes until the owner restarts the container (reset). */
  #onHold = false
  #timer: NodeJS.Timeout | null = null
  /** When the next tick is due (Date.now() ms). */
  #nextAt = 0
  #inFlight = false
  #pending = false
  #stopped = false
  /** Bumped by reset/stop so that a probe in flight across them is discarded. */
  #generation = 0

  constructor(
    kind: ProbeKind,
    container: string,
    probe: Probe,
    fingerprint: string,
    fn: ProbeFn,
    owner: WorkerOwner,
    metrics: HealthMetrics,
  ) {
    this.kind = kind
    this.container = container
    this.probe = probe
    this.fingerprint = fingerprint
    this.#fn = fn
    this.#owner = owner
    this.#state = initialState(kind)
    const type = probe.handler.type
    this.#onSuccess = metrics.results.labels({ kind, type, result: 'success' })
    this.#onWarning = metrics.results.labels({ kind, type, result: 'warning' })
    this.#onFailure = metrics.results.labels({ kind, type, result: 'failure' })
    this.#duration = metrics.duration.labels({ kind, type })
  }

  get state(): ProbeState {
    return this.#state
  }

  /** Probe now, then every periodSeconds. No jitter: timing stays testable (spec §6.3). */
  start(): void {
    this.#nextAt = Date.now()
    this.#onTimer()
  }

  /** Probe as soon as possible, outside the tick schedule (readiness right after startup succeeded). */
  trigger(): void {
    this.#tick()
  }

  /** The container "restarted": back to the initial state, counters cleared, initialDelaySeconds counted again. */
  reset(): void {
    this.#generation++
    this.#state = initialState(this.kind)
    this.#last = 'unknown'
    this.#run = 0
    this.#onHold = false
    this.#pending = false
  }

  stop(): void {
    this.#stopped = true
    this.#generation++
    if (this.#timer) clearTimeout(this.#timer)
    this.#timer = null
  }

  /** The last change of verdict, null before the first. */
  get lastTransition(): Transition | null {
    return this.#lastTransition
  }

  status() {
    return {
      kind: this.kind,
      type: this.probe.handler.type,
      state: this.#state,
      consecutiveSuccesses: this.#last === 'success' ? this.#run : 0,
      consecutiveFailures: this.#last === 'failure' ? this.#run : 0,
      lastResult: this.#last,
      lastMessage: this.#lastMessage,
      lastProbeAt: this.#lastProbeAt === null ? null : new Date(this.#lastProbeAt).toISOString(),
      lastTransition: this.#lastTransition,
      onHold: this.#onHold,
      periodSeconds: this.probe.periodSeconds,
      timeoutSeconds: this.probe.timeoutSeconds,
      initialDelaySeconds: this.probe.initialDelaySeconds,
      successThreshold: this.probe.successThreshold,
      failureThreshold: this.probe.failureThreshold,
    }
  }

  /**
   * Ticks stay on the grid start + k·period, like a Go ticker: a late timer does not push every later tick back
   * (setInterval would drift by the event-loop lag each period), and ticks missed entirely are dropped, not queued.
   */
  readonly #onTimer = (): void => {
    if (this.#stopped) return
    const period = this.probe.periodSeconds * 1000
    const now = Date.now()
    this.#nextAt += period
    if (this.#nextAt <= now) this.#nextAt += Math.ceil((now - this.#nextAt + 1) / period) * period
    this.#timer = setTimeout(this.#onTimer, this.#nextAt - now)
    this.#tick()
  }

  readonly #tick = (): void => {
    if (this.#stopped) return
    if (this.#inFlight) {
      this.#pending = true
      return
    }
    if (!this.#shouldProbe()) return
    void this.#probeOnce()
  }

  #shouldProbe(): boolean {
    if (this.#onHold) return false
    const runningFor = Date.now() - this.#owner.containerStartedAt + DELAY_SLACK_MS
    if (Math.floor(runningFor / 1000) < this.probe.initialDelaySeconds) return false
    const started = this.#owner.isStarted(this.container)
    // Startup gates the other two; once it has passed it stops probing.
    return this.kind === 'startup' ? !started : started
  }

  async #probeOnce(): Promise<void> {
    const generation = this.#generation
    this.#inFlight = true
    const t0 = performance.now()
    let outcome: ProbeOutcome
    try {
      outcome = await this.#fn(this.probe.timeoutSeconds * 1000)
    } catch (err) {
      outcome = failure(`internal error: ${(err as Error).message}`)
    }
    this.#inFlight = false
    if (this.#stopped) return
    if (generation === this.#generation) {
      this.#duration.observe((performance.now() - t0) / 1000)
      this.#record(outcome)
    }
    if (this.#pending) {
      this.#pending = false
      this.#tick()
    }
  }

  #record(outcome: ProbeOutcome): void {
    const result: ProbeState = outcome.ok ? 'success' : 'failure'
    ;(outcome.ok ? (outcome.warning ? this.#onWarning : this.#onSuccess) : this.#onFailure).inc()
    this.#lastMessage = outcome.message
    this.#lastProbeAt = Date.now()
    if (result === this.#last) this.#run++
    else {
      this.#last = result
      this.#run = 1
    }
    let changed = false
    const below =
      result === 'failure' ? this.#run < this.probe.failureThreshold : this.#run < this.probe.successThreshold
    if (!below && this.#state !== result) {
      this.#lastTransition = {
        at: new Date(this.#lastProbeAt).toISOString(),
        from: this.#state,
        to: result,
        reason: outcome.message || (result === 'success' ? 'probe succeeded' : 'probe failed'),
      }
      this.#state = result
      changed = true
    }
    // kubelet stops a failed liveness or startup worker until the container restarts.
    if (this.#state === 'failure' && this.kind !== 'readiness') this.#onHold = true
    this.#owner.onResult(this, outcome, changed)
  }
}

/** One probe's entry in the health plane's /status. */
export type ProbeStatus = ReturnType<ProbeWorker['status']>
