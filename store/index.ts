// store/: etcd mode (issue 20). One client per process; the objects' source (source.ts) and the node's lease
// (node-lease.ts) share it. bin/meshlet.ts calls startEtcd when --store is etcd://…; the file provider is untouched.

import type { Logger } from 'pino'
import type { Registry } from 'prom-client'
import type { KubeObject } from '../model/objects.ts'
import type { EtcdOptions, RuntimeOptions } from '../model/options.ts'
import type { ObjectError } from '../model/snapshot.ts'
import type { Store } from '../model/store.ts'
import { connect } from './client.ts'
import { EtcdSource } from './source.ts'

export interface EtcdDeps {
  readonly store: Store
  readonly metrics: Registry
  readonly log: Logger
  readonly options: RuntimeOptions
  readonly version: string
  readonly onUpdate: (objects: readonly KubeObject[], errors: readonly ObjectError[]) => void
}

export interface EtcdMode {
  /** The objects' provider, also listed as the `store` plane (readiness, degraded state, /status). */
  readonly source: EtcdSource
  close(): Promise<void>
}

export function startEtcd(etcd: EtcdOptions, deps: EtcdDeps): EtcdMode {
  const client = connect(etcd)
  const log = deps.log.child({ component: 'store' })
  const source = new EtcdSource({ client, prefix: etcd.prefix, log, metrics: deps.metrics, onUpdate: deps.onUpdate })
  return {
    source,
    async close() {
      await source.close()
      client.close()
    },
  }
}
