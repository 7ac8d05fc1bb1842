// v1 Service: defaults and the API server's checks (pkg/apis/core/validation ValidateService) for the fields meshlet
// honours.

import type { IPFamily, ObjectMeta, Service, ServicePort, ServiceType } from './objects.ts'
import { type Ctx, type Obj, dns1123Subdomain, qualifiedName, show } from './validate-common.ts'
import { ipFamily } from './ip.ts'

const NODE_PORT_MIN = 30000
const NODE_PORT_MAX = 32767

export function validateService(ctx: Ctx, doc: Obj, meta: ObjectMeta): Service {
  const spec = ctx.obj(doc, 'spec', 'spec') ?? {}
  const type = ctx.enumOf<ServiceType>(
    'spec.type',
    ctx.str(spec, 'type', 'spec.type'),
    ['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName'],
    'ClusterIP',
  )
  const external = type === 'NodePort' || type === 'LoadBalancer'

  // ---- cluster IPs
  const clusterIP = ctx.str(spec, 'clusterIP', 'spec.clusterIP')
  const clusterIPsRaw = ctx.strList(spec, 'clusterIPs', 'spec.clusterIPs')
  if (clusterIP !== null && clusterIP !== '' && clusterIPsRaw.length > 0 && clusterIPsRaw[0] !== clusterIP) {
    ctx.add(
      'spec.clusterIPs[0]',
      'MLT_CONFIG_MISMATCH',
      `must match spec.clusterIP ${show(clusterIP)}, got ${show(clusterIPsRaw[0])}`,
    )
  }
  const written = clusterIPsRaw.length > 0 ? clusterIPsRaw : clusterIP !== null && clusterIP !== '' ? [clusterIP] : []
  const writtenPath = clusterIPsRaw.length > 0 ? (i: number) => `spec.clusterIPs[${i}]` : () => 'spec.clusterIP'
  const headless = written[0] === 'None'
  const clusterIPs: string[] = []
  if (headless) {
    if (written.length > 1)
      ctx.add('spec.clusterIPs', 'MLT_CONFIG_FORBIDDEN', 'must hold a single "None" for a headless Service')
    if (external) ctx.add(writtenPath(0), 'MLT_CONFIG_FORBIDDEN', `may not be "None" for type ${type}`)
  } else {
    if (written.length > 2)
      ctx.add(
        'spec.clusterIPs',
        'MLT_CONFIG_RANGE',
        `may hold at most 2 addresses (one per family), got ${written.length}`,
      )
    for (const [i, ip] of written.entries()) {
      if (ip === 'None') {
        ctx.add(writtenPath(i), 'MLT_CONFIG_INVALID_IP', '"None" is only allowed as the first and only entry')
        continue
      }
      const c = ctx.ip(writtenPath(i), ip)
      if (c !== null) clusterIPs.push(c)
    }
    if (clusterIPs.length === 2 && ipFamily(clusterIPs[0] ?? '') === ipFamily(clusterIPs[1] ?? '')) {
      ctx.add(
        'spec.clusterIPs[1]',
        'MLT_CONFIG_FAMILY',
        `must be of the other IP family than ${show(clusterIPs[0])}, got ${show(clusterIPs[1])}`,
      )
    }
  }
  if (type === 'ExternalName' && written.length > 0) {
    ctx.add(writtenPath(0), 'MLT_CONFIG_FORBIDDEN', `must be empty for type ExternalName, got ${show(written[0])}`)
  }

  // ---- IP families
  const ipFamilies: IPFamily[] = []
  for (const [i, f] of ctx.strList(spec, 'ipFamilies', 'spec.ipFamilies').entries()) {
    const fam = ctx.enumOf<IPFamily>(`spec.ipFamilies[${i}]`, f, ['IPv4', 'IPv6'], 'IPv4')
    if (f !== fam) continue
    if (ipFamilies.includes(fam)) ctx.add(`spec.ipFamilies[${i}]`, 'MLT_CONFIG_DUPLICATE', `duplicate family ${fam}`)
    else ipFamilies.push(fam)
  }
  for (const [i, ip] of clusterIPs.entries()) {
    const want = ipFamilies[i]
    if (want !== undefined && `IPv${ipFamily(ip)}` !== want) {
      ctx.add(
        writtenPath(i),
        'MLT_CONFIG_MISMATCH',
        `must be an ${want} address to match spec.ipFamilies[${i}], got ${show(ip)}`,
      )
    }
  }
  const policyRaw = ctx.str(spec, 'ipFamilyPolicy', 'spec.ipFamilyPolicy')
  const multi = clusterIPs.length > 1 || ipFamilies.length > 1
  const ipFamilyPolicy = ctx.enumOf(
    'spec.ipFamilyPolicy',
    policyRaw,
    ['SingleStack', 'PreferDualStack', 'RequireDualStack'] as const,
    multi ? 'RequireDualStack' : 'SingleStack',
  )
  if (policyRaw === 'SingleStack' && multi) {
    ctx.add(
      'spec.ipFamilyPolicy',
      'MLT_CONFIG_MISMATCH',
      'must be PreferDualStack or RequireDualStack when two IP families or addresses are given',
    )
  }

  // ---- ports
  const portsRaw = ctx.objs(spec, 'ports', 'spec.ports')
  if (portsRaw.length === 0 && type !== 'ExternalName' && !headless && Array.isArray(spec.ports ?? [])) {
    ctx.add(
      'spec.ports',
      'MLT_CONFIG_REQUIRED',
      'required: at least one port (except for ExternalName and headless Services)',
    )
  }
  const ports: ServicePort[] = []
  const names = new Map<string, number>()
  const portKeys = new Map<string, number>()
  const nodePortKeys = new Map<string, number>()
  for (const { item, i, path } of portsRaw) {
    const name = ctx.str(item, 'name', `${path}.name`) ?? ''
    if (name === '' && portsRaw.length > 1)
      ctx.add(`${path}.name`, 'MLT_CONFIG_REQUIRED', 'required when a Service has more than one port')
    if (name !== '' && ctx.name(`${path}.name`, name, 'label')) {
      const prev = names.get(name)
      if (prev !== undefined)
        ctx.add(`${path}.name`, 'MLT_CONFIG_DUPLICATE', `duplicate port name ${show(name)} (also spec.ports[${prev}])`)
      else names.set(name, i)
    }
    const protocol = ctx.protocol(item, 'protocol', `${path}.protocol`)
    const portRaw = ctx.int(item, 'port', `${path}.port`)
    if (item.port === undefined || item.port === null) ctx.add(`${path}.port`, 'MLT_CONFIG_REQUIRED', 'required')
    const port = ctx.range(`${path}.port`, portRaw, 1, 65535)
    if (port !== null) {
      const k = `${port}/${protocol}`
      const prev = portKeys.get(k)
      if (prev !== undefined)
        ctx.add(path, 'MLT_CONFIG_DUPLICATE', `duplicate port ${port}/${protocol} (also spec.ports[${prev}])`)
      else portKeys.set(k, i)
    }
    // targetPort 0 (or absent) defaults to port, as the API server's defaulting does.
    const targetPort = item.targetPort === 0 ? null : ctx.portOrName(item, 'targetPort', `${path}.targetPort`)
    let nodePort = ctx.int(item, 'nodePort', `${path}.nodePort`)
    if (nodePort === 0) nodePort = null
    if (nodePort !== null) {
      if (!external) {
        ctx.add(`${path}.nodePort`, 'MLT_CONFIG_FORBIDDEN', `may not be used when type is ${type}`)
        nodePort = null
      } else {
        nodePort = ctx.range(`${path}.nodePort`, nodePort, NODE_PORT_MIN, NODE_PORT_MAX)
        if (nodePort !== null) {
          const k = `${nodePort}/${protocol}`
          const prev = nodePortKeys.get(k)
          if (prev !== undefined)
            ctx.add(`${path}.nodePort`, 'MLT_CONFIG_DUPLICATE', `duplicate nodePort ${k} (also spec.ports[${prev}])`)
          else nodePortKeys.set(k, i)
        }
      }
    }
    const appProtocol = ctx.str(item, 'appProtocol', `${path}.appProtocol`)
    if (appProtocol !== null) {
      const why = qualifiedName(appProtocol)
      if (why !== null) ctx.add(`${path}.appProtocol`, 'MLT_CONFIG_INVALID_NAME', `${why}, got ${show(appProtocol)}`)
    }
    ports.push({ name, protocol, port: port ?? 0, targetPort: targetPort ?? port ?? 0, nodePort, appProtocol })
  }

  // ---- selector: an empty selector means "no selector", as in Kubernetes
  const selectorMap = ctx.labels(spec, 'selector', 'spec.selector', 'label')
  const selector = Object.keys(selectorMap).length > 0 ? selectorMap : null

  // ---- ExternalName
  let externalName = ctx.str(spec, 'externalName', 'spec.externalName')
  if (type === 'ExternalName') {
    const clean = externalName === null ? '' : externalName.replace(/\.$/, '')
    if (clean === '') {
      ctx.add('spec.externalName', 'MLT_CONFIG_REQUIRED', 'required for type ExternalName')
      externalName = null
    } else {
      const why = dns1123Subdomain(clean)
      if (why !== null) {
        ctx.add('spec.externalName', 'MLT_CONFIG_INVALID_NAME', `${why}, got ${show(externalName)}`)
        externalName = null
      } else externalName = clean
    }
  } else externalName = null

  const externalIPs: string[] = []
  for (const [i, ip] of ctx.strList(spec, 'externalIPs', 'spec.externalIPs').entries()) {
    const c = ctx.ip(`spec.externalIPs[${i}]`, ip)
    if (c !== null) externalIPs.push(c)
  }

  // ---- session affinity
  const sessionAffinity = ctx.enumOf(
    'spec.sessionAffinity',
    ctx.str(spec, 'sessionAffinity', 'spec.sessionAffinity'),
    ['None', 'ClientIP'] as const,
    'None',
  )
  let affinityTimeoutSeconds = 10800
  const sac = ctx.obj(spec, 'sessionAffinityConfig', 'spec.sessionAffinityConfig')
  if (sac !== null) {
    const clientIP = ctx.obj(sac, 'clientIP', 'spec.sessionAffinityConfig.clientIP')
    if (sessionAffinity !== 'ClientIP') {
      ctx.add(
        'spec.sessionAffinityConfig',
        'MLT_CONFIG_FORBIDDEN',
        `must not be set when sessionAffinity is ${sessionAffinity}`,
      )
    } else if (clientIP !== null) {
      const p = 'spec.sessionAffinityConfig.clientIP.timeoutSeconds'
      const t = ctx.range(p, ctx.int(clientIP, 'timeoutSeconds', p), 1, 86400)
      if (t !== null) affinityTimeoutSeconds = t
    }
  }

  // ---- traffic policies
  const etpRaw = ctx.str(spec, 'externalTrafficPolicy', 'spec.externalTrafficPolicy')
  const externalTrafficPolicy = ctx.enumOf(
    'spec.externalTrafficPolicy',
    etpRaw,
    ['Cluster', 'Local'] as const,
    'Cluster',
  )
  if (externalTrafficPolicy === 'Local' && !external && externalIPs.length === 0) {
    ctx.add(
      'spec.externalTrafficPolicy',
      'MLT_CONFIG_FORBIDDEN',
      `may only be Local for externally-accessible Services (NodePort, LoadBalancer or externalIPs), not type ${type}`,
    )
  }
  const internalTrafficPolicy = ctx.enumOf(
    'spec.internalTrafficPolicy',
    ctx.str(spec, 'internalTrafficPolicy', 'spec.internalTrafficPolicy'),
    ['Cluster', 'Local'] as const,
    'Cluster',
  )
  const tdRaw = ctx.str(spec, 'trafficDistribution', 'spec.trafficDistribution')
  const trafficDistribution =
    tdRaw === null
      ? null
      : ctx.enumOf(
          'spec.trafficDistribution',
          tdRaw,
          ['PreferClose', 'PreferSameZone', 'PreferSameNode'] as const,
          'PreferClose',
        )
  const publishNotReadyAddresses = ctx.bool(spec, 'publishNotReadyAddresses', 'spec.publishNotReadyAddresses') ?? false

  let healthCheckNodePort = ctx.int(spec, 'healthCheckNodePort', 'spec.healthCheckNodePort')
  if (healthCheckNodePort === 0) healthCheckNodePort = null
  if (healthCheckNodePort !== null) {
    if (type !== 'LoadBalancer' || externalTrafficPolicy !== 'Local') {
      ctx.add(
        'spec.healthCheckNodePort',
        'MLT_CONFIG_FORBIDDEN',
        'may only be set when type is LoadBalancer and externalTrafficPolicy is Local',
      )
      healthCheckNodePort = null
    } else
      healthCheckNodePort = ctx.range('spec.healthCheckNodePort', healthCheckNodePort, NODE_PORT_MIN, NODE_PORT_MAX)
  }

  // ---- LoadBalancer
  let loadBalancerIP = ctx.str(spec, 'loadBalancerIP', 'spec.loadBalancerIP')
  if (loadBalancerIP === '') loadBalancerIP = null
  if (loadBalancerIP !== null) loadBalancerIP = ctx.ip('spec.loadBalancerIP', loadBalancerIP)
  let loadBalancerClass = ctx.str(spec, 'loadBalancerClass', 'spec.loadBalancerClass')
  if (loadBalancerClass !== null) {
    if (type !== 'LoadBalancer') {
      ctx.add(
        'spec.loadBalancerClass',
        'MLT_CONFIG_FORBIDDEN',
        `may only be used when type is LoadBalancer, not ${type}`,
      )
      loadBalancerClass = null
    } else {
      const why = qualifiedName(loadBalancerClass)
      if (why !== null)
        ctx.add('spec.loadBalancerClass', 'MLT_CONFIG_INVALID_NAME', `${why}, got ${show(loadBalancerClass)}`)
    }
  }

  return {
    kind: 'Service',
    meta,
    spec: {
      type,
      selector,
      clusterIPs: type === 'ExternalName' ? [] : clusterIPs,
      headless: type !== 'ExternalName' && headless,
      ipFamilies,
      ipFamilyPolicy,
      ports,
      externalName,
      externalIPs,
      sessionAffinity,
      affinityTimeoutSeconds,
      externalTrafficPolicy,
      internalTrafficPolicy,
      trafficDistribution,
      publishNotReadyAddresses,
      healthCheckNodePort,
      loadBalancerIP,
      loadBalancerClass,
    },
  }
}
