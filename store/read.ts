// `meshlet get … --store etcd://…`: the objects under PREFIX/objects/ and the live nodes under PREFIX/nodes/, read
// at one revision (one transaction), built into a Snapshot the way a node builds it. No node needs to run.

import type { Etcd3 } from 'etcd3'
import type { Cidr } from '../model/ip.ts'
import type { Snapshot } from '../model/snapshot.ts'
import { Store } from '../model/store.ts'
import { assemble, entryOf } from './source.ts'
import { nodesPrefix, objectsPrefix } from './keys.ts'

export interface StoredView {
  readonly revision: string
  readonly snapshot: Snapshot
  /** The nodes holding a lease at that revision. */
  readonly liveNodes: readonly string[]
}

export async function readStore(
  client: Etcd3,
  prefix: string,
  build: { nodeName: string; serviceCidrs: readonly Cidr[] },
): Promise<StoredView> {
  // Nodes at the objects' revision: one consistent view.
  const objectsRes = await client.getAll().prefix(objectsPrefix(prefix)).exec()
  const revision = objectsRes.header.revision
  const nodesRes = await client.getAll().prefix(nodesPrefix(prefix)).revision(revision).exec()
  const entries = new Map(objectsRes.kvs.map((kv) => [kv.key.toString(), entryOf(kv.key.toString(), kv.value)]))
  const liveNodes = nodesRes.kvs.map((kv) => kv.key.toString().slice(nodesPrefix(prefix).length))
  const { objects, errors } = assemble(entries)
  const store = new Store({ nodeName: build.nodeName, serviceCidrs: build.serviceCidrs })
  store.setObjects(objects, errors)
  store.setLiveNodes(liveNodes)
  return { revision: String(revision), snapshot: store.flush()!, liveNodes }
}
