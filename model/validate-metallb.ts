// metallb.io/v1beta1 IPAddressPool and L2Advertisement (specs/l4-health.md §5.1). Overlaps between pools are a
// cross-object rule and are checked by the allocator, not here.

import type { IPAddressPool, L2Advertisement, ObjectMeta } from './objects.ts'
import { type Ctx, type Obj, show } from './validate-common.ts'
import { ipFamily, ipToBigInt, parseCidr } from './ip.ts'

export function validateIPAddressPool(ctx: Ctx, doc: Obj, meta: ObjectMeta): IPAddressPool {
  const spec = ctx.obj(doc, 'spec', 'spec') ?? {}
  const raw = ctx.strList(spec, 'addresses', 'spec.addresses')
  if (raw.length === 0 && Array.isArray(spec.addresses ?? []))
    ctx.add('spec.addresses', 'MLT_CONFIG_REQUIRED', 'required: at least one CIDR or range')
  const addresses: string[] = []
  for (const [i, a] of raw.entries()) {
    if (checkPoolEntry(ctx, `spec.addresses[${i}]`, a)) addresses.push(a.trim())
  }
  const autoAssign = ctx.bool(spec, 'autoAssign', 'spec.autoAssign') ?? true
  const avoidBuggyIPs = ctx.bool(spec, 'avoidBuggyIPs', 'spec.avoidBuggyIPs') ?? false
  const sa = ctx.obj(spec, 'serviceAllocation', 'spec.serviceAllocation')
  let serviceAllocation: IPAddressPool['serviceAllocation'] = null
  if (sa !== null) {
    const priority = ctx.range(
      'spec.serviceAllocation.priority',
      ctx.int(sa, 'priority', 'spec.serviceAllocation.priority'),
      0,
      Infinity,
    )
    const namespaces = ctx.strList(sa, 'namespaces', 'spec.serviceAllocation.namespaces')
    for (const [i, ns] of namespaces.entries()) ctx.name(`spec.serviceAllocation.namespaces[${i}]`, ns, 'label')
    serviceAllocation = {
      priority,
      namespaces,
      namespaceSelectors: ctx.labelSelectors(sa, 'namespaceSelectors', 'spec.serviceAllocation.namespaceSelectors'),
      serviceSelectors: ctx.labelSelectors(sa, 'serviceSelectors', 'spec.serviceAllocation.serviceSelectors'),
    }
  }
  return { kind: 'IPAddressPool', meta, addresses, autoAssign, avoidBuggyIPs, serviceAllocation }
}

/** A CIDR, or an inclusive "start-end" range of one family with start <= end. */
function checkPoolEntry(ctx: Ctx, path: string, entry: string): boolean {
  const a = entry.trim()
  const dash = a.indexOf('-')
  if (dash === -1) {
    if (parseCidr(a) === null) {
      ctx.add(
        path,
        'MLT_CONFIG_INVALID_CIDR',
        `must be a CIDR ("198.18.10.0/24") or a range ("198.18.10.5-198.18.10.9"), got ${show(entry)}`,
      )
      return false
    }
    return true
  }
  const start = a.slice(0, dash).trim()
  const end = a.slice(dash + 1).trim()
  const fs = ipFamily(start)
  const fe = ipFamily(end)
  if (fs === 0 || fe === 0) {
    ctx.add(
      path,
      'MLT_CONFIG_INVALID_CIDR',
      `invalid range: ${show(fs === 0 ? start : end)} is not an IP address, got ${show(entry)}`,
    )
    return false
  }
  if (fs !== fe) {
    ctx.add(path, 'MLT_CONFIG_FAMILY', `invalid range: start and end must be of the same IP family, got ${show(entry)}`)
    return false
  }
  if (ipToBigInt(start) > ipToBigInt(end)) {
    ctx.add(path, 'MLT_CONFIG_INVALID_CIDR', `invalid range: start ${start} is after end ${end}`)
    return false
  }
  return true
}

export function validateL2Advertisement(ctx: Ctx, doc: Obj, meta: ObjectMeta): L2Advertisement {
  const spec = ctx.obj(doc, 'spec', 'spec') ?? {}
  const ipAddressPools = ctx.strList(spec, 'ipAddressPools', 'spec.ipAddressPools')
  for (const [i, p] of ipAddressPools.entries()) ctx.name(`spec.ipAddressPools[${i}]`, p, 'subdomain')
  const ipAddressPoolSelectors = ctx.labelSelectors(spec, 'ipAddressPoolSelectors', 'spec.ipAddressPoolSelectors')
  const nodeSelectors = ctx.labelSelectors(spec, 'nodeSelectors', 'spec.nodeSelectors')
  const interfaces = ctx.strList(spec, 'interfaces', 'spec.interfaces')
  for (const [i, ifc] of interfaces.entries()) {
    if (ifc === '' || ifc.length > 15 || /[\s/]/.test(ifc)) {
      ctx.add(
        `spec.interfaces[${i}]`,
        'MLT_CONFIG_INVALID_NAME',
        `must be a network interface name (1-15 characters, no '/' or spaces), got ${show(ifc)}`,
      )
    }
  }
  return { kind: 'L2Advertisement', meta, ipAddressPools, ipAddressPoolSelectors, nodeSelectors, interfaces }
}
