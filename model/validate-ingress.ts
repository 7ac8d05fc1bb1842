// networking.k8s.io/v1 Ingress and IngressClass, with the API server's checks (specs/ingress.md §1.2).

import type {
  Ingress,
  IngressClass,
  IngressPath,
  IngressRule,
  IngressServiceBackend,
  ObjectMeta,
  PathType,
} from './objects.ts'
import { type Ctx, type Obj, dns1123Subdomain, show } from './validate-common.ts'
import { ipFamily } from './ip.ts'

const CLASS_ANNOTATION = 'kubernetes.io/ingress.class'
const DEFAULT_CLASS_ANNOTATION = 'ingressclass.kubernetes.io/is-default-class'

export function validateIngress(ctx: Ctx, doc: Obj, meta: ObjectMeta): Ingress {
  const spec = ctx.obj(doc, 'spec', 'spec') ?? {}
  let ingressClassName = ctx.str(spec, 'ingressClassName', 'spec.ingressClassName')
  if (ingressClassName === '') ingressClassName = null
  if (ingressClassName !== null) ctx.name('spec.ingressClassName', ingressClassName, 'subdomain')
  else ingressClassName = meta.annotations[CLASS_ANNOTATION] || null

  const db = ctx.obj(spec, 'defaultBackend', 'spec.defaultBackend')
  const defaultBackend = db === null ? null : backend(ctx, db, 'spec.defaultBackend')

  const tls: { hosts: string[]; secretName: string | null }[] = []
  for (const { item, path } of ctx.objs(spec, 'tls', 'spec.tls')) {
    const hosts: string[] = []
    for (const [i, h] of ctx.strList(item, 'hosts', `${path}.hosts`).entries()) {
      if (checkHost(ctx, `${path}.hosts[${i}]`, h)) hosts.push(h)
    }
    let secretName = ctx.str(item, 'secretName', `${path}.secretName`)
    if (secretName === '') secretName = null
    if (secretName !== null) ctx.name(`${path}.secretName`, secretName, 'subdomain')
    tls.push({ hosts, secretName })
  }

  const rules: IngressRule[] = []
  const rulesRaw = ctx.objs(spec, 'rules', 'spec.rules')
  for (const { item, path } of rulesRaw) {
    let host = ctx.str(item, 'host', `${path}.host`)
    if (host === '') host = null
    if (host !== null && !checkHost(ctx, `${path}.host`, host)) host = null
    const paths: IngressPath[] = []
    const http = ctx.obj(item, 'http', `${path}.http`)
    if (http !== null) {
      const pathsRaw = ctx.objs(http, 'paths', `${path}.http.paths`)
      if (pathsRaw.length === 0 && Array.isArray(http.paths ?? []))
        ctx.add(`${path}.http.paths`, 'MLT_CONFIG_REQUIRED', 'required: at least one path')
      for (const { item: p, path: pp } of pathsRaw) {
        const ptRaw = ctx.reqStr(p, 'pathType', `${pp}.pathType`)
        const pathType = ctx.enumOf<PathType>(
          `${pp}.pathType`,
          ptRaw,
          ['Exact', 'Prefix', 'ImplementationSpecific'],
          'Prefix',
        )
        let value = ctx.str(p, 'path', `${pp}.path`) ?? ''
        if (ptRaw === pathType) checkPath(ctx, `${pp}.path`, value, pathType)
        // An empty ImplementationSpecific path is allowed by the API server; controllers read it as "/".
        if (value === '') value = '/'
        const b = ctx.obj(p, 'backend', `${pp}.backend`)
        if (b === null && p.backend === undefined) ctx.add(`${pp}.backend`, 'MLT_CONFIG_REQUIRED', 'required')
        const be = b === null ? null : backend(ctx, b, `${pp}.backend`)
        if (be !== null) paths.push({ path: value, pathType, backend: be })
      }
    }
    rules.push({ host, paths })
  }
  if (rulesRaw.length === 0 && db === null) {
    ctx.add('spec', 'MLT_CONFIG_REQUIRED', 'either spec.rules or spec.defaultBackend must be specified')
  }
  return { kind: 'Ingress', meta, spec: { ingressClassName, defaultBackend, tls, rules } }
}

function backend(ctx: Ctx, b: Obj, path: string): IngressServiceBackend | null {
  const hasService = b.service !== undefined && b.service !== null
  const hasResource = b.resource !== undefined && b.resource !== null
  if (hasService && hasResource) {
    ctx.add(path, 'MLT_CONFIG_ONE_OF', 'cannot set both service and resource backends')
    return null
  }
  if (hasResource) {
    ctx.add(
      `${path}.resource`,
      'MLT_CONFIG_UNSUPPORTED',
      'resource backends are not supported by meshlet; use a service backend',
    )
    return null
  }
  const s = ctx.obj(b, 'service', `${path}.service`)
  if (s === null) {
    if (!hasService) ctx.add(`${path}.service`, 'MLT_CONFIG_REQUIRED', 'required')
    return null
  }
  const name = ctx.reqStr(s, 'name', `${path}.service.name`)
  if (name !== null) ctx.name(`${path}.service.name`, name, 'label1035')
  const port = ctx.obj(s, 'port', `${path}.service.port`)
  let number: number | null = null
  let portName: string | null = null
  if (port === null) {
    if (s.port === undefined || s.port === null)
      ctx.add(`${path}.service.port`, 'MLT_CONFIG_REQUIRED', 'required: number or name')
  } else {
    const hasNumber = port.number !== undefined && port.number !== null
    let pn = ctx.str(port, 'name', `${path}.service.port.name`)
    if (pn === '') pn = null
    if (hasNumber && pn !== null) {
      ctx.add(`${path}.service.port`, 'MLT_CONFIG_ONE_OF', 'cannot set both port name and port number')
    } else if (hasNumber) {
      number = ctx.range(
        `${path}.service.port.number`,
        ctx.int(port, 'number', `${path}.service.port.number`),
        1,
        65535,
      )
    } else if (pn !== null) {
      if (ctx.name(`${path}.service.port.name`, pn, 'port')) portName = pn
    } else {
      ctx.add(`${path}.service.port`, 'MLT_CONFIG_ONE_OF', 'must set exactly one of port name and port number')
    }
  }
  if (name === null || (number === null && portName === null)) return null
  return { service: { name, port: { number, name: portName } } }
}

/**
 * Why `host` is not a valid Ingress rule or TLS host (a DNS-1123 subdomain or "*." + one, not an IP address, no
 * port); null when it is. The one copy of the rule: proxy/routes checks objects that did not come through here
 * (`meshlet check`, hand-built objects) with it too.
 */
export function ingressHostProblem(host: string): string | null {
  if (ipFamily(host) !== 0) return 'must be a DNS name, not an IP address'
  if (host.includes('*')) {
    const rest = host.startsWith('*.') ? host.slice(2) : null
    if (rest === null || rest.includes('*') || dns1123Subdomain(rest) !== null)
      return 'a wildcard must be "*." followed by a DNS-1123 subdomain (the whole first label only)'
    return null
  }
  return dns1123Subdomain(host)
}

/** Rule and TLS hosts (ingressHostProblem). */
function checkHost(ctx: Ctx, path: string, host: string): boolean {
  const why = ingressHostProblem(host)
  if (why !== null) {
    ctx.add(path, 'MLT_CONFIG_INVALID_NAME', `${why}, got ${show(host)}`)
    return false
  }
  return true
}

const BAD_SEQUENCES = ['//', '/./', '/../', '%2f', '%2F']

/**
 * Why an `Exact` or `Prefix` path is not valid (the API server's checks: absolute, no `//`, `/./`, `/../`, `%2F`,
 * not ending in `/.` or `/..`); null when it is. The one copy of the rule, shared with proxy/routes.
 */
export function ingressPathProblem(value: string): string | null {
  if (!value.startsWith('/')) return 'must be an absolute path (start with "/")'
  for (const seq of BAD_SEQUENCES) if (value.includes(seq)) return `must not contain '${seq}'`
  if (value.endsWith('/..') || value.endsWith('/.')) return "must not end with '/..' or '/.'"
  return null
}

function checkPath(ctx: Ctx, path: string, value: string, pathType: PathType): void {
  if (value === '' && pathType === 'ImplementationSpecific') return
  if (pathType === 'ImplementationSpecific') {
    if (!value.startsWith('/'))
      ctx.add(path, 'MLT_CONFIG_INVALID_VALUE', `must be an absolute path (start with "/"), got ${show(value)}`)
    return
  }
  const why = ingressPathProblem(value)
  if (why !== null) ctx.add(path, 'MLT_CONFIG_INVALID_VALUE', `${why}, got ${show(value)}`)
}

export function validateIngressClass(ctx: Ctx, doc: Obj, meta: ObjectMeta): IngressClass {
  const spec = ctx.obj(doc, 'spec', 'spec') ?? {}
  const controller = ctx.reqStr(spec, 'controller', 'spec.controller')
  if (controller !== null && controller.length > 250) {
    ctx.add('spec.controller', 'MLT_CONFIG_INVALID_VALUE', `must be at most 250 characters, got ${controller.length}`)
  }
  return {
    kind: 'IngressClass',
    meta,
    controller: controller ?? '',
    isDefault: meta.annotations[DEFAULT_CLASS_ANNOTATION] === 'true',
  }
}
