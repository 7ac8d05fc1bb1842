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
import { NodeLease, nodeAddresses } from './node-lease.ts'
import { L2Owners } from './l2-owners.ts'
import type { Plane } from '../model/plane.ts'

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
  /** `store` and `lease` (this node's lease and the live nodes), for /readyz and /status. */
  readonly planes: readonly Plane[]
  close(): Promise<void>
}

export function startEtcd(etcd: EtcdOptions, deps: EtcdDeps): EtcdMode {
  const client = connect(etcd)
  const log = deps.log.child({ component: 'store' })
  const source = new EtcdSource({ client, prefix: etcd.prefix, log, metrics: deps.metrics, onUpdate: deps.onUpdate })
  // Nobody is elected until the leases are known: an empty live set, not file mode's "every declared Node".
  deps.store.setLiveNodes([])
  const lease = new NodeLease({
    client,
    prefix: etcd.prefix,
    node: deps.options.nodeName,
    ttlSeconds: deps.options.nodeLeaseSeconds,
    info: { addresses: nodeAddresses(), adminPort: deps.options.admin?.port ?? null, version: deps.version },
    log,
    onLive: (names) => deps.store.setLiveNodes(names),
    beforeRevoke: async (): Promise<void> => owners?.withdraw(),
    onCutOff: (reason) => source.setCutOff('lease', reason === null ? null : `node lease keepalive failing: ${reason}`),
  })
  void lease.start()
  // Claims only matter where an address is put on an interface and answered by ARP (MetalLB's L2 mode).
  const vipInterface = deps.options.vipMode === 'interface' ? deps.options.vipInterface : null
  const owners: L2Owners | null =
    vipInterface === null
      ? null
      : new L2Owners({
          client,
          prefix: etcd.prefix,
          node: deps.options.nodeName,
          vipInterface,
          store: deps.store,
          lease: (): string | null => lease.heldLease(),
          log,
        })
  owners?.start()
  return {
    source,
    planes: [source, lease],
    async close() {
      await owners?.close()
      await lease.close()
      await source.close()
      client.close()
    },
  }
}
