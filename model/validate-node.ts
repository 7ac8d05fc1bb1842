// v1 Node: names, addresses, zone and the Ready condition, for traffic policies, topology and NodePorts.

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
    if (address !== null && (type === 'InternalIP' || type === 'ExternalIP'))
      address = ctx.ip(`${path}.address`, address)
    if (address !== null && typeRaw === type) addresses.push({ type, address })
  }
  const zone =
    meta.labels['topology.kubernetes.io/zone'] || meta.labels['failure-domain.beta.kubernetes.io/zone'] || null
  // status.conditions: only Ready is read (specs/l4-health.md §5.6: a node whose Ready is False announces nothing).
  let ready: boolean | null = null
  for (const { item, path } of ctx.objs(status, 'conditions', 'status.conditions')) {
    const type = ctx.reqStr(item, 'type', `${path}.type`)
    const value = ctx.reqStr(item, 'status', `${path}.status`)
    if (type !== 'Ready' || value === null) continue
    const v = ctx.enumOf(`${path}.status`, value, ['True', 'False', 'Unknown'] as const, 'Unknown')
    ready = v === 'True' ? true : v === 'False' ? false : null
  }
  return { kind: 'Node', meta, addresses, zone, ready }
}
