// v1 Node: names, addresses and zone, for traffic policies, topology and NodePorts.

import type { Node, ObjectMeta } from './objects.ts'
import { type Ctx, type Obj } from './validate-common.ts'

const ADDRESS_TYPES = ['InternalIP', 'ExternalIP', 'Hostname', 'InternalDNS', 'ExternalDNS'] as const

export function validateNode(ctx: Ctx, doc: Obj, meta: ObjectMeta): Node {
  const status = ctx.obj(doc, 'status', 'status') ?? {}
  const addresses: { type: string; address: string }[] = []
  for (const { item, path } of ctx.objs(status, 'addresses', 'status.addresses')) {
    const typeRaw = ctx.reqStr(item, 'type', `${path}.type`)
    const type = ctx.enumOf(`${path}.type`, typeRaw, ADDRESS_TYPES, 'InternalIP')
    let address = ctx.reqStr(item, 'address', `${path}.address`)
    if (address !== null && (type === 'InternalIP' || type === 'ExternalIP')) address = ctx.ip(`${path}.address`, address)
    if (address !== null && typeRaw === type) addresses.push({ type, address })
  }
  const zone = meta.labels['topology.kubernetes.io/zone'] || meta.labels['failure-domain.beta.kubernetes.io/zone'] || null
  return { kind: 'Node', meta, addresses, zone }
}
