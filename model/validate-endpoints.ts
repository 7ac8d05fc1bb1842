// v1 Endpoints and discovery.k8s.io/v1 EndpointSlice: hand-written endpoints of Services without a selector.
// Loopback addresses are accepted (DESIGN.md exception); the API server's other endpoint-IP rules apply.

import type {
  EndpointPort,
  Endpoints,
  EndpointsAddress,
  EndpointSlice,
  ObjectMeta,
  SliceEndpoint,
  TargetRef,
} from './objects.ts'
import { type Ctx, type Obj, dns1123Subdomain, show } from './validate-common.ts'

export function validateEndpoints(ctx: Ctx, doc: Obj, meta: ObjectMeta): Endpoints {
  const subsets: Endpoints['subsets'][number][] = []
  for (const { item, path } of ctx.objs(doc, 'subsets', 'subsets')) {
    const addresses = endpointsAddresses(ctx, item, 'addresses', path, meta.namespace)
    const notReadyAddresses = endpointsAddresses(ctx, item, 'notReadyAddresses', path, meta.namespace)
    const ports = endpointPorts(ctx, item, `${path}.ports`, true)
    subsets.push({ addresses, notReadyAddresses, ports })
  }
  return { kind: 'Endpoints', meta, subsets }
}

function endpointsAddresses(ctx: Ctx, subset: Obj, key: string, spath: string, ns: string): EndpointsAddress[] {
  const out: EndpointsAddress[] = []
  for (const { item, path } of ctx.objs(subset, key, `${spath}.${key}`)) {
    const raw = ctx.reqStr(item, 'ip', `${path}.ip`)
    const ip = raw === null ? null : ctx.ip(`${path}.ip`, raw, { endpoint: true })
    const hostname = opt(ctx.str(item, 'hostname', `${path}.hostname`))
    if (hostname !== null) ctx.name(`${path}.hostname`, hostname, 'label')
    const nodeName = opt(ctx.str(item, 'nodeName', `${path}.nodeName`))
    if (nodeName !== null) ctx.name(`${path}.nodeName`, nodeName, 'subdomain')
    const targetRef = readTargetRef(ctx, item, `${path}.targetRef`, ns)
    if (ip !== null) out.push({ ip, hostname, nodeName, targetRef })
  }
  return out
}

export function validateEndpointSlice(ctx: Ctx, doc: Obj, meta: ObjectMeta): EndpointSlice {
  const atRaw = ctx.reqStr(doc, 'addressType', 'addressType')
  const addressType = ctx.enumOf('addressType', atRaw, ['IPv4', 'IPv6', 'FQDN'] as const, 'IPv4')
  const endpoints: SliceEndpoint[] = []
  for (const { item, path } of ctx.objs(doc, 'endpoints', 'endpoints')) {
    const raw = ctx.strList(item, 'addresses', `${path}.addresses`)
    if (raw.length === 0 && Array.isArray(item.addresses ?? []))
      ctx.add(`${path}.addresses`, 'MLT_CONFIG_REQUIRED', 'required: at least one address')
    if (raw.length > 100)
      ctx.add(`${path}.addresses`, 'MLT_CONFIG_RANGE', `may hold at most 100 addresses, got ${raw.length}`)
    const addresses: string[] = []
    for (const [i, a] of raw.entries()) {
      const ap = `${path}.addresses[${i}]`
      if (atRaw !== addressType) continue // the addressType error is enough
      if (addressType === 'FQDN') {
        const why = dns1123Subdomain(a)
        if (why !== null) ctx.add(ap, 'MLT_CONFIG_INVALID_NAME', `${why}, got ${show(a)}`)
        else addresses.push(a)
      } else {
        const ip = ctx.ip(ap, a, { endpoint: true, family: addressType === 'IPv4' ? 4 : 6 })
        if (ip !== null) addresses.push(ip)
      }
    }
    const c = ctx.obj(item, 'conditions', `${path}.conditions`) ?? {}
    const conditions = {
      ready: ctx.bool(c, 'ready', `${path}.conditions.ready`),
      serving: ctx.bool(c, 'serving', `${path}.conditions.serving`),
      terminating: ctx.bool(c, 'terminating', `${path}.conditions.terminating`),
    }
    const hostname = opt(ctx.str(item, 'hostname', `${path}.hostname`))
    if (hostname !== null) ctx.name(`${path}.hostname`, hostname, 'label')
    const nodeName = opt(ctx.str(item, 'nodeName', `${path}.nodeName`))
    if (nodeName !== null) ctx.name(`${path}.nodeName`, nodeName, 'subdomain')
    const zone = opt(ctx.str(item, 'zone', `${path}.zone`))
    const h = ctx.obj(item, 'hints', `${path}.hints`)
    let hints: SliceEndpoint['hints'] = null
    if (h !== null) {
      const names = (key: string) =>
        ctx.objs(h, key, `${path}.hints.${key}`).flatMap(({ item: z, path: zp }) => {
          const n = ctx.reqStr(z, 'name', `${zp}.name`)
          return n === null ? [] : [n]
        })
      hints = { forZones: names('forZones'), forNodes: names('forNodes') }
    }
    const targetRef = readTargetRef(ctx, item, `${path}.targetRef`, meta.namespace)
    endpoints.push({ addresses, conditions, hostname, nodeName, zone, hints, targetRef })
  }
  const ports = endpointPorts(ctx, doc, 'ports', false)
  const serviceName = opt(meta.labels['kubernetes.io/service-name'] ?? null)
  return { kind: 'EndpointSlice', meta, addressType, serviceName, endpoints, ports }
}

/** Ports of an Endpoints subset (`requireName` when more than one) or of an EndpointSlice. */
function endpointPorts(ctx: Ctx, o: Obj, path: string, isEndpoints: boolean): EndpointPort[] {
  const items = ctx.objs(o, 'ports', path)
  const out: EndpointPort[] = []
  const names = new Map<string, number>()
  for (const { item, i, path: pp } of items) {
    const name = ctx.str(item, 'name', `${pp}.name`) ?? ''
    if (name === '' && isEndpoints && items.length > 1)
      ctx.add(`${pp}.name`, 'MLT_CONFIG_REQUIRED', 'required when a subset has more than one port')
    if (name !== '' && ctx.name(`${pp}.name`, name, 'label')) {
      const prev = names.get(name)
      if (prev !== undefined)
        ctx.add(`${pp}.name`, 'MLT_CONFIG_DUPLICATE', `duplicate port name ${show(name)} (also ${path}[${prev}])`)
      else names.set(name, i)
    } else if (name === '' && !isEndpoints) {
      const prev = names.get('')
      if (prev !== undefined)
        ctx.add(`${pp}.name`, 'MLT_CONFIG_DUPLICATE', `duplicate port name "" (also ${path}[${prev}])`)
      else names.set('', i)
    }
    if (item.port === undefined || item.port === null) {
      if (isEndpoints) ctx.add(`${pp}.port`, 'MLT_CONFIG_REQUIRED', 'required')
      else
        ctx.add(
          `${pp}.port`,
          'MLT_CONFIG_UNSUPPORTED',
          'a port without a number ("all ports") is not supported by meshlet',
        )
    }
    const port = ctx.range(`${pp}.port`, ctx.int(item, 'port', `${pp}.port`), 1, 65535)
    const protocol = ctx.protocol(item, 'protocol', `${pp}.protocol`)
    const appProtocol = ctx.str(item, 'appProtocol', `${pp}.appProtocol`)
    out.push({ name, port: port ?? 0, protocol, appProtocol })
  }
  return out
}

function readTargetRef(ctx: Ctx, o: Obj, path: string, defaultNs: string): TargetRef | null {
  const t = ctx.obj(o, 'targetRef', path)
  if (t === null) return null
  return {
    kind: ctx.str(t, 'kind', `${path}.kind`) ?? 'Pod',
    namespace: opt(ctx.str(t, 'namespace', `${path}.namespace`)) ?? defaultNs,
    name: ctx.str(t, 'name', `${path}.name`) ?? '',
  }
}

function opt(v: string | null): string | null {
  return v === '' ? null : v
}
