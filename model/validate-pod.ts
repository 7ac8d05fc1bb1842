// v1 Pod: containers, their named ports and probes (specs/l4-health.md §6.1), and the Pod's addresses.

import type { Container, ContainerPort, HttpHeader, ObjectMeta, Pod, Probe, ProbeHandler } from './objects.ts'
import { type Ctx, type Obj, HTTP_HEADER_NAME, show } from './validate-common.ts'
import { ipFamily } from './ip.ts'

type ProbeKind = 'readinessProbe' | 'livenessProbe' | 'startupProbe'
const HANDLERS = ['exec', 'httpGet', 'tcpSocket', 'grpc'] as const

export function validatePod(ctx: Ctx, doc: Obj, meta: ObjectMeta): Pod {
  const spec = ctx.obj(doc, 'spec', 'spec') ?? {}
  const status = ctx.obj(doc, 'status', 'status') ?? {}

  const nodeName = nonEmpty(ctx.str(spec, 'nodeName', 'spec.nodeName'))
  if (nodeName !== null) ctx.name('spec.nodeName', nodeName, 'subdomain')
  const hostname = nonEmpty(ctx.str(spec, 'hostname', 'spec.hostname'))
  if (hostname !== null) ctx.name('spec.hostname', hostname, 'label')
  const subdomain = nonEmpty(ctx.str(spec, 'subdomain', 'spec.subdomain'))
  if (subdomain !== null) ctx.name('spec.subdomain', subdomain, 'label')

  const containersRaw = ctx.objs(spec, 'containers', 'spec.containers')
  if (containersRaw.length === 0 && Array.isArray(spec.containers ?? []))
    ctx.add('spec.containers', 'MLT_CONFIG_REQUIRED', 'required: at least one container')
  const containerNames = new Map<string, number>()
  // Port names are unique across all containers of a Pod (the API server's rule).
  const portNames = new Map<string, string>()
  const containers: Container[] = []
  for (const { item, i, path } of containersRaw) {
    const name = ctx.reqStr(item, 'name', `${path}.name`)
    if (name !== null && ctx.name(`${path}.name`, name, 'label')) {
      const prev = containerNames.get(name)
      if (prev !== undefined)
        ctx.add(
          `${path}.name`,
          'MLT_CONFIG_DUPLICATE',
          `duplicate container name ${show(name)} (also spec.containers[${prev}])`,
        )
      else containerNames.set(name, i)
    }
    const ports: ContainerPort[] = []
    for (const { item: p, path: pp } of ctx.objs(item, 'ports', `${path}.ports`)) {
      const pname = nonEmpty(ctx.str(p, 'name', `${pp}.name`))
      if (pname !== null && ctx.name(`${pp}.name`, pname, 'port')) {
        const prev = portNames.get(pname)
        if (prev !== undefined)
          ctx.add(`${pp}.name`, 'MLT_CONFIG_DUPLICATE', `duplicate port name ${show(pname)} (also ${prev})`)
        else portNames.set(pname, `${pp}.name`)
      }
      if (p.containerPort === undefined || p.containerPort === null)
        ctx.add(`${pp}.containerPort`, 'MLT_CONFIG_REQUIRED', 'required')
      const containerPort = ctx.range(
        `${pp}.containerPort`,
        ctx.int(p, 'containerPort', `${pp}.containerPort`),
        1,
        65535,
      )
      const protocol = ctx.protocol(p, 'protocol', `${pp}.protocol`)
      if (p.hostPort !== undefined && p.hostPort !== null)
        ctx.range(`${pp}.hostPort`, ctx.int(p, 'hostPort', `${pp}.hostPort`), 0, 65535)
      ports.push({ name: pname, containerPort: containerPort ?? 0, protocol })
    }
    containers.push({
      name: name ?? '',
      ports,
      readinessProbe: probe(ctx, item, 'readinessProbe', path, ports),
      livenessProbe: probe(ctx, item, 'livenessProbe', path, ports),
      startupProbe: probe(ctx, item, 'startupProbe', path, ports),
    })
  }

  // ---- addresses: podIP, then podIPs (podIPs[0] must equal podIP; at most one per family)
  const podIPRaw = nonEmpty(ctx.str(status, 'podIP', 'status.podIP'))
  const podIP = podIPRaw === null ? null : ctx.ip('status.podIP', podIPRaw, { endpoint: true })
  const podIPs: string[] = []
  for (const { item, i, path } of ctx.objs(status, 'podIPs', 'status.podIPs')) {
    const raw = ctx.reqStr(item, 'ip', `${path}.ip`)
    if (raw === null) continue
    const ip = ctx.ip(`${path}.ip`, raw, { endpoint: true })
    if (ip === null) continue
    if (i === 0 && podIP !== null && ip !== podIP)
      ctx.add(`${path}.ip`, 'MLT_CONFIG_MISMATCH', `must match status.podIP ${show(podIP)}, got ${show(raw)}`)
    else if (podIPs.some((o) => ipFamily(o) === ipFamily(ip))) {
      ctx.add(
        `${path}.ip`,
        'MLT_CONFIG_FAMILY',
        `may hold only one address per IP family, got a second IPv${ipFamily(ip)} address ${show(raw)}`,
      )
    } else podIPs.push(ip)
  }
  if (podIPs.length > 2)
    ctx.add('status.podIPs', 'MLT_CONFIG_RANGE', `may hold at most 2 addresses, got ${podIPs.length}`)
  if (podIP !== null && !podIPs.includes(podIP)) podIPs.unshift(podIP)

  return {
    kind: 'Pod',
    meta,
    spec: { nodeName, hostname, subdomain, containers },
    status: { podIP: podIP ?? podIPs[0] ?? null, podIPs },
  }
}

function nonEmpty(v: string | null): string | null {
  return v === '' ? null : v
}

function probe(
  ctx: Ctx,
  container: Obj,
  which: ProbeKind,
  cpath: string,
  ports: readonly ContainerPort[],
): Probe | null {
  const path = `${cpath}.${which}`
  const p = ctx.obj(container, which, path)
  if (p === null) return null

  // Zero means "unset" for the kubelet's defaults (SetDefaults_Probe), so 0 takes the default; negatives are errors.
  const num = (key: string, dflt: number, min: number): number => {
    const v = ctx.int(p, key, `${path}.${key}`)
    if (v === null || (v === 0 && min > 0)) return dflt
    return ctx.range(`${path}.${key}`, v, min, Infinity) ?? dflt
  }
  const initialDelaySeconds = num('initialDelaySeconds', 0, 0)
  const periodSeconds = num('periodSeconds', 10, 1)
  const timeoutSeconds = num('timeoutSeconds', 1, 1)
  const successThreshold = num('successThreshold', 1, 1)
  const failureThreshold = num('failureThreshold', 3, 1)
  if (which !== 'readinessProbe' && successThreshold !== 1) {
    ctx.add(`${path}.successThreshold`, 'MLT_CONFIG_RANGE', `must be 1 for ${which}, got ${successThreshold}`)
  }
  const tgp = ctx.int(p, 'terminationGracePeriodSeconds', `${path}.terminationGracePeriodSeconds`)
  if (tgp !== null) {
    if (which === 'readinessProbe')
      ctx.add(`${path}.terminationGracePeriodSeconds`, 'MLT_CONFIG_FORBIDDEN', 'may not be set for readinessProbe')
    else ctx.range(`${path}.terminationGracePeriodSeconds`, tgp, 1, Infinity)
  }

  const present = HANDLERS.filter((h) => p[h] !== undefined && p[h] !== null)
  let handler: ProbeHandler | null = null
  if (present.length === 0) {
    ctx.add(path, 'MLT_CONFIG_REQUIRED', `must specify a handler: one of ${HANDLERS.join(', ')}`)
  } else if (present.length > 1) {
    ctx.add(
      `${path}.${present[1]}`,
      'MLT_CONFIG_ONE_OF',
      `may not specify more than one handler, got ${present.join(' and ')}`,
    )
  } else {
    handler = probeHandler(ctx, p, present[0]!, path, ports)
  }
  return handler === null
    ? null
    : { handler, initialDelaySeconds, periodSeconds, timeoutSeconds, successThreshold, failureThreshold }
}

function probeHandler(
  ctx: Ctx,
  p: Obj,
  type: (typeof HANDLERS)[number],
  ppath: string,
  ports: readonly ContainerPort[],
): ProbeHandler | null {
  const path = `${ppath}.${type}`
  const h = ctx.obj(p, type, path)
  if (h === null) return null
  switch (type) {
    case 'exec': {
      const command = ctx.strList(h, 'command', `${path}.command`)
      if (command.length === 0 && Array.isArray(h.command ?? []))
        ctx.add(`${path}.command`, 'MLT_CONFIG_REQUIRED', 'required: the command to run')
      return { type: 'exec', command }
    }
    case 'httpGet': {
      const port = probePort(ctx, h, `${path}.port`, ports)
      const scheme = ctx.enumOf(
        `${path}.scheme`,
        ctx.str(h, 'scheme', `${path}.scheme`),
        ['HTTP', 'HTTPS'] as const,
        'HTTP',
      )
      const host = nonEmpty(ctx.str(h, 'host', `${path}.host`))
      let reqPath = ctx.str(h, 'path', `${path}.path`) ?? ''
      if (reqPath === '') reqPath = '/'
      const httpHeaders: HttpHeader[] = []
      for (const { item, path: hp } of ctx.objs(h, 'httpHeaders', `${path}.httpHeaders`)) {
        const name = ctx.reqStr(item, 'name', `${hp}.name`)
        if (name !== null && !HTTP_HEADER_NAME.test(name))
          ctx.add(`${hp}.name`, 'MLT_CONFIG_INVALID_VALUE', `must be a valid HTTP header name, got ${show(name)}`)
        const value = ctx.str(item, 'value', `${hp}.value`) ?? ''
        if (name !== null) httpHeaders.push({ name, value })
      }
      return port === null ? null : { type: 'httpGet', scheme, host, path: reqPath, port, httpHeaders }
    }
    case 'tcpSocket': {
      const port = probePort(ctx, h, `${path}.port`, ports)
      const host = nonEmpty(ctx.str(h, 'host', `${path}.host`))
      return port === null ? null : { type: 'tcpSocket', host, port }
    }
    case 'grpc': {
      if (h.port === undefined || h.port === null) ctx.add(`${path}.port`, 'MLT_CONFIG_REQUIRED', 'required')
      const port = ctx.range(`${path}.port`, ctx.int(h, 'port', `${path}.port`), 1, 65535)
      const service = ctx.str(h, 'service', `${path}.service`) ?? ''
      return port === null ? null : { type: 'grpc', port, service }
    }
  }
}

/** A probe port: a number, or the name of a port of the container that declares the probe (resolved here). */
function probePort(ctx: Ctx, h: Obj, path: string, ports: readonly ContainerPort[]): number | null {
  if (h.port === undefined || h.port === null) {
    ctx.add(path, 'MLT_CONFIG_REQUIRED', 'required')
    return null
  }
  const port = ctx.portOrName(h, 'port', path)
  if (typeof port !== 'string') return port
  const found = ports.find((cp) => cp.name === port)
  if (found === undefined) {
    const known = ports.filter((cp) => cp.name !== null).map((cp) => cp.name)
    ctx.add(
      path,
      'MLT_CONFIG_UNKNOWN_PORT',
      `names no port of this container, got ${show(port)}${known.length ? ` (known: ${known.join(', ')})` : ''}`,
    )
    return null
  }
  return found.containerPort
}
