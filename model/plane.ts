// The contract between bin/ (wiring, lifecycle), admin/ (/readyz, /status) and each plane (dns, lb, proxy, health).

import type { Logger } from 'pino'
import type { Registry } from 'prom-client'
import type { Store } from './store.ts'
import type { UpstreamReporter } from './snapshot.ts'
import type { RuntimeOptions } from './options.ts'

export interface Plane {
  readonly name: string
  /** True once the plane has applied a Snapshot and every listener it wants is up (admin /readyz). */
  ready(): boolean
  /**
   * Why ready() is false, one line each naming what is missing and why (a listener and its error), for /readyz.
   * Optional: a plane without it is shown by name only.
   */
  unready?(): readonly string[]
  /**
   * Why the plane serves from older state than it should (etcd unreachable: the last Snapshot), one line each. Shown
   * in /readyz under a 200: the node still serves. Optional.
   */
  degraded?(): readonly string[]
  /** JSON-able state for /status (listeners, errors, per-object state). */
  status(): unknown
  /** Stop accepting, let in-flight work finish until `deadline` (Date.now() ms), then release everything. */
  close(deadline: number): Promise<void>
}

export interface PlaneContext {
  readonly store: Store
  readonly options: RuntimeOptions
  /** A child logger with `component` already bound. */
  readonly log: Logger
  /** The process-wide prom-client registry (admin serves it). */
  readonly metrics: Registry
  /** Where L4/L7 report upstream successes and failures (health/'s passive ejection). */
  readonly reporter: UpstreamReporter
}

export type PlaneFactory = (ctx: PlaneContext) => Promise<Plane>
