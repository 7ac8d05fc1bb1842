// Process-wide metrics owned by no plane: configuration reloads, objects by kind, configuration errors.

import { Counter, Gauge, collectDefaultMetrics, type Registry } from 'prom-client'
import type { Store } from '../model/store.ts'

export function registerCoreMetrics(registry: Registry, store: Store): { reloads: Counter<'result'> } {
  collectDefaultMetrics({ register: registry, prefix: 'meshlet_' })
  const reloads = new Counter({
    name: 'meshlet_config_reloads_total',
    help: 'Configuration loads, by result (ok: every file parsed; error: at least one file or object rejected)',
    labelNames: ['result'] as const,
    registers: [registry],
  })
  new Gauge({
    name: 'meshlet_objects',
    help: 'Valid objects in the current Snapshot, by kind',
    labelNames: ['kind'] as const,
    registers: [registry],
    collect() {
      this.reset()
      for (const o of store.current?.objects ?? []) this.inc({ kind: o.kind })
    },
  })
  new Gauge({
    name: 'meshlet_config_errors',
    help: 'Configuration errors currently in force (invalid objects, unreadable files)',
    registers: [registry],
    collect() {
      this.set(store.current?.errors.length ?? 0)
    },
  })
  new Gauge({
    name: 'meshlet_snapshot_version',
    help: 'Version of the Snapshot the planes are serving',
    registers: [registry],
    collect() {
      this.set(store.current?.version ?? 0)
    },
  })
  return { reloads }
}
