// One parsed manifest document → one typed KubeObject with Kubernetes' defaults, validated the way the API server
// validates the fields meshlet uses (DESIGN.md "Objects understood"). Every problem becomes an ObjectError naming the
// source, the object, the field path and a code from model/config-errors.ts; all errors of an object are collected,
// and an object with any error is not returned (the caller keeps its last good version, config/watch.ts).

import type { Kind, KubeObject, ObjectMeta, SourceRef } from './objects.ts'
import type { ObjectError } from './snapshot.ts'
import { Ctx, isObj, show, withinCountLimits, type NameRule, type Obj } from './validate-common.ts'
import { validateService } from './validate-service.ts'
import { validatePod } from './validate-pod.ts'
import { validateEndpoints, validateEndpointSlice } from './validate-endpoints.ts'
import { validateIngress, validateIngressClass } from './validate-ingress.ts'
import { validateSecret } from './validate-secret.ts'
import { validateNode } from './validate-node.ts'
import { validateIPAddressPool, validateL2Advertisement } from './validate-metallb.ts'
import { isManagedDeployment, validateDeployment } from './validate-deployment.ts'

interface KindInfo {
  readonly apiVersions: readonly string[]
  readonly namespaced: boolean
  /** The API server's rule for metadata.name of this kind. */
  readonly name: NameRule
  readonly build: (ctx: Ctx, doc: Obj, meta: ObjectMeta) => KubeObject
  /**
   * For kinds meshlet uses only when marked (a Deployment with meshlet.io/replicas-from-dns): false reports the
   * document as an ignored kind, unvalidated, like a kind meshlet does not know.
   */
  readonly managed?: (doc: Obj) => boolean
}

const KIND_INFO: Readonly<Record<Kind, KindInfo>> = {
  Service: { apiVersions: ['v1'], namespaced: true, name: 'label1035', build: validateService },
  Pod: { apiVersions: ['v1'], namespaced: true, name: 'subdomain', build: validatePod },
  Endpoints: { apiVersions: ['v1'], namespaced: true, name: 'subdomain', build: validateEndpoints },
  EndpointSlice: {
    apiVersions: ['discovery.k8s.io/v1'],
    namespaced: true,
    name: 'subdomain',
    build: validateEndpointSlice,
  },
  Ingress: { apiVersions: ['networking.k8s.io/v1'], namespaced: true, name: 'subdomain', build: validateIngress },
  IngressClass: {
    apiVersions: ['networking.k8s.io/v1'],
    namespaced: false,
    name: 'subdomain',
    build: validateIngressClass,
  },
  Secret: { apiVersions: ['v1'], namespaced: true, name: 'subdomain', build: validateSecret },
  Node: { apiVersions: ['v1'], namespaced: false, name: 'subdomain', build: validateNode },
  IPAddressPool: {
    apiVersions: ['metallb.io/v1beta1'],
    namespaced: true,
    name: 'subdomain',
    build: validateIPAddressPool,
  },
  L2Advertisement: {
    apiVersions: ['metallb.io/v1beta1'],
    namespaced: true,
    name: 'subdomain',
    build: validateL2Advertisement,
  },
  Deployment: {
    apiVersions: ['apps/v1'],
    namespaced: true,
    name: 'subdomain',
    build: validateDeployment,
    managed: isManagedDeployment,
  },
}

function kindInfo(kind: string): KindInfo | null {
  return Object.hasOwn(KIND_INFO, kind) ? KIND_INFO[kind as Kind] : null
}

export interface ValidateResult {
  /** The typed object; null when the document has any error or is an ignored kind. */
  readonly object: KubeObject | null
  readonly errors: ObjectError[]
  /** "apps/v1 Deployment" for kinds meshlet does not use (reported once upstream, not an error). */
  readonly ignoredKind: string | null
  /**
   * Identity "Kind namespace/name" as soon as kind and name are readable, even when the object is invalid: the key
   * under which config/watch.ts keeps an object's last good version. null when the document has no identity.
   */
  readonly id: string | null
}

/**
 * Validates one parsed document. `pathPrefix` ("items[3]") is prepended to every field path, for objects inside a
 * `List`.
 */
export function validateDocument(doc: unknown, source: SourceRef, pathPrefix = ''): ValidateResult {
  const ctx = new Ctx(source, pathPrefix)
  if (!isObj(doc)) {
    ctx.typeError('', 'a map (a Kubernetes object)', doc)
    return { object: null, errors: ctx.errors, ignoredKind: null, id: null }
  }
  const kind = typeof doc.kind === 'string' ? doc.kind : null
  const apiVersion = typeof doc.apiVersion === 'string' ? doc.apiVersion : null
  const metadata = isObj(doc.metadata) ? doc.metadata : null
  const name = metadata && typeof metadata.name === 'string' && metadata.name !== '' ? metadata.name : null
  const info = kind === null ? null : kindInfo(kind)

  if (kind !== null && kind !== '' && (info === null || (info.managed !== undefined && !info.managed(doc)))) {
    return { object: null, errors: [], ignoredKind: apiVersion ? `${apiVersion} ${kind}` : kind, id: null }
  }
  const rawNs =
    metadata && typeof metadata.namespace === 'string' && metadata.namespace !== '' ? metadata.namespace : null
  const namespace = info && !info.namespaced ? '' : (rawNs ?? 'default')
  const key = name === null ? null : namespace === '' ? name : `${namespace}/${name}`
  ctx.object = kind === null || kind === '' ? (key ?? null) : key === null ? kind : `${kind} ${key}`
  const id = info !== null && key !== null ? `${kind} ${key}` : null

  if (apiVersion === null) {
    if (doc.apiVersion === undefined || doc.apiVersion === null || doc.apiVersion === '')
      ctx.add('apiVersion', 'MLT_CONFIG_REQUIRED', 'required')
    else ctx.typeError('apiVersion', 'a string', doc.apiVersion)
  } else if (info && !info.apiVersions.includes(apiVersion)) {
    ctx.add(
      'apiVersion',
      'MLT_CONFIG_API_VERSION',
      `${kind} must be ${info.apiVersions.join(' or ')}, got ${show(apiVersion)}`,
    )
  }
  if (kind === null || kind === '') {
    if (doc.kind === undefined || doc.kind === null || doc.kind === '')
      ctx.add('kind', 'MLT_CONFIG_REQUIRED', 'required')
    else ctx.typeError('kind', 'a string', doc.kind)
  }
  const meta = readMeta(ctx, doc, info)
  if (info === null) return { object: null, errors: ctx.errors, ignoredKind: null, id }
  if (!withinCountLimits(ctx, kind ?? '', doc)) return { object: null, errors: ctx.errors, ignoredKind: null, id }

  const object = info.build(ctx, doc, meta)
  return ctx.errors.length > 0
    ? { object: null, errors: ctx.errors, ignoredKind: null, id }
    : { object, errors: [], ignoredKind: null, id }
}

function readMeta(ctx: Ctx, doc: Obj, info: KindInfo | null): ObjectMeta {
  const m = ctx.obj(doc, 'metadata', 'metadata')
  if (m === null) {
    if (doc.metadata === undefined || doc.metadata === null) ctx.add('metadata.name', 'MLT_CONFIG_REQUIRED', 'required')
    return {
      name: '',
      namespace: info && !info.namespaced ? '' : 'default',
      labels: {},
      annotations: {},
      deletionTimestamp: null,
      source: ctx.source,
    }
  }
  const name = ctx.reqStr(m, 'name', 'metadata.name')
  if (name !== null && info !== null) ctx.name('metadata.name', name, info.name)
  const ns = ctx.str(m, 'namespace', 'metadata.namespace')
  if (ns !== null && ns !== '' && info?.namespaced !== false) ctx.name('metadata.namespace', ns, 'label')
  const labels = ctx.labels(m, 'labels', 'metadata.labels', 'label')
  const annotations = ctx.labels(m, 'annotations', 'metadata.annotations', 'any')
  const deletionTimestamp = ctx.str(m, 'deletionTimestamp', 'metadata.deletionTimestamp')
  if (deletionTimestamp !== null && Number.isNaN(Date.parse(deletionTimestamp))) {
    ctx.add(
      'metadata.deletionTimestamp',
      'MLT_CONFIG_INVALID_VALUE',
      `must be an RFC 3339 time, got ${show(deletionTimestamp)}`,
    )
  }
  return {
    name: name ?? '',
    namespace: info && !info.namespaced ? '' : ns || 'default',
    labels,
    annotations,
    deletionTimestamp,
    source: ctx.source,
  }
}

/**
 * One error as one line: `web.yaml doc 2 (Service default/web): spec.ports[0].port: must be 1-65535, got 0`.
 * Parts that are absent (no object, no field path) are left out.
 */
export function formatObjectError(e: ObjectError): string {
  let out = ''
  if (e.source) out = e.source.doc > 0 ? `${e.source.file} doc ${e.source.doc}` : e.source.file
  if (e.object) out += out === '' ? `(${e.object})` : ` (${e.object})`
  if (e.path) out += out === '' ? e.path : `: ${e.path}`
  return out === '' ? e.message : `${out}: ${e.message}`
}
