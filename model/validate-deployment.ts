// apps/v1 Deployment whose replicas meshlet discovers through DNS (config/dns-discovery.ts): the annotation
// `meshlet.io/replicas-from-dns` names the DNS name, the Pod template gives labels, ports and probes. The template is
// validated with the Pod rules (model/validate-pod.ts), and the selector must match the template's labels, as the API
// server requires. A Deployment without the annotation never gets here: model/validate.ts reports it as an ignored
// kind, so the Deployments of a real cluster can be given as they are.

import type { Deployment, LabelSelector, ObjectMeta } from './objects.ts'
import { Ctx, type Obj, show } from './validate-common.ts'
import { validatePod } from './validate-pod.ts'
import { ipFamily } from './ip.ts'

/** The annotation that makes a Deployment meshlet's: the DNS name whose A/AAAA records are the replicas. */
export const REPLICAS_FROM_DNS = 'meshlet.io/replicas-from-dns'
/** How often the name is re-resolved, in seconds (1-3600, default 5). */
export const RESOLVE_INTERVAL = 'meshlet.io/resolve-interval-seconds'
export const DEFAULT_RESOLVE_INTERVAL_SECONDS = 5

/** True when a raw Deployment document carries the annotation (validate.ts ignores the others). */
export function isManagedDeployment(doc: Obj): boolean {
  const m = doc.metadata
  if (typeof m !== 'object' || m === null || Array.isArray(m)) return false
  const a = (m as Obj).annotations
  return typeof a === 'object' && a !== null && !Array.isArray(a) && Object.hasOwn(a, REPLICAS_FROM_DNS)
}

// Compose service names may hold '_' and capitals, and Docker's DNS answers them, so the rule is the looser hostname
// one (RFC 2181), not DNS-1123: labels of letters, digits, '-' and '_', not starting or ending with '-'.
const DNS_LABEL = /^[A-Za-z0-9_]([-A-Za-z0-9_]{0,61}[A-Za-z0-9_])?$/

/** Why `v` is not a DNS name meshlet can resolve, or null. One trailing dot is allowed. */
export function dnsNameProblem(v: string): string | null {
  const name = v.endsWith('.') ? v.slice(0, -1) : v
  if (ipFamily(name) !== 0) return 'must be a DNS name, not an address (fixed addresses belong in a Pod or Endpoints)'
  if (name.length === 0 || name.length > 253 || !name.split('.').every((l) => DNS_LABEL.test(l))) {
    return "must be a DNS name (labels of at most 63 letters, digits, '-' or '_', not starting or ending with '-'; at most 253 characters)"
  }
  return null
}

/** Does a label selector select these labels (matchLabels AND every matchExpression)? */
export function selectorMatches(sel: LabelSelector, labels: Readonly<Record<string, string>>): boolean {
  for (const k in sel.matchLabels) if (labels[k] !== sel.matchLabels[k]) return false
  for (const e of sel.matchExpressions) {
    const has = Object.hasOwn(labels, e.key)
    switch (e.operator) {
      case 'In':
        if (!has || !e.values.includes(labels[e.key]!)) return false
        break
      case 'NotIn':
        if (has && e.values.includes(labels[e.key]!)) return false
        break
      case 'Exists':
        if (!has) return false
        break
      case 'DoesNotExist':
        if (has) return false
        break
    }
  }
  return true
}

export function validateDeployment(ctx: Ctx, doc: Obj, meta: ObjectMeta): Deployment {
  const spec = ctx.obj(doc, 'spec', 'spec') ?? {}

  const replicas = ctx.range('spec.replicas', ctx.int(spec, 'replicas', 'spec.replicas'), 0, Infinity)

  // apps/v1: the selector is required and may not be empty.
  const selRaw = ctx.obj(spec, 'selector', 'spec.selector')
  const selector: LabelSelector =
    selRaw === null ? { matchLabels: {}, matchExpressions: [] } : ctx.labelSelector(selRaw, 'spec.selector')
  const emptySelector = Object.keys(selector.matchLabels).length === 0 && selector.matchExpressions.length === 0
  if (selRaw === null) ctx.add('spec.selector', 'MLT_CONFIG_REQUIRED', 'required')
  else if (emptySelector)
    ctx.add('spec.selector', 'MLT_CONFIG_REQUIRED', 'may not be empty: it must select the template labels')

  // The template is a Pod without status: validated with the Pod rules, its errors under spec.template.
  const template = ctx.obj(spec, 'template', 'spec.template')
  if (template === null)
    ctx.add('spec.template', 'MLT_CONFIG_REQUIRED', 'required: the Pod template (labels, containers, ports, probes)')
  const t = template ?? {}
  const sub = new Ctx(ctx.source, ctx.prefix === '' ? 'spec.template' : `${ctx.prefix}.spec.template`)
  sub.object = ctx.object
  const tmeta = sub.obj(t, 'metadata', 'metadata') ?? {}
  const labels = sub.labels(tmeta, 'labels', 'metadata.labels', 'label')
  const annotations = sub.labels(tmeta, 'annotations', 'metadata.annotations', 'any')
  if (t.status !== undefined)
    sub.add('status', 'MLT_CONFIG_FORBIDDEN', "a Pod template has no status: the replicas' addresses come from DNS")
  const pod = template === null ? null : validatePod(sub, { spec: t.spec ?? {} }, { ...meta, labels, annotations })
  for (const e of sub.errors) ctx.errors.push(e)

  if (template !== null && selRaw !== null && !emptySelector && !selectorMatches(selector, labels)) {
    ctx.add(
      'spec.template.metadata.labels',
      'MLT_CONFIG_MISMATCH',
      `\`selector\` does not match template \`labels\` (selector ${show(selRaw)}, labels ${show(labels)})`,
    )
  }

  // ---- discovery annotations
  const dnsName = meta.annotations[REPLICAS_FROM_DNS] ?? ''
  const why = dnsNameProblem(dnsName)
  if (why !== null)
    ctx.add(`metadata.annotations[${REPLICAS_FROM_DNS}]`, 'MLT_CONFIG_INVALID_NAME', `${why}, got ${show(dnsName)}`)
  let intervalSeconds = DEFAULT_RESOLVE_INTERVAL_SECONDS
  const rawInterval = meta.annotations[RESOLVE_INTERVAL]
  if (rawInterval !== undefined) {
    const n = /^\d+$/.test(rawInterval.trim()) ? Number(rawInterval.trim()) : NaN
    if (!Number.isInteger(n) || n < 1 || n > 3600) {
      ctx.add(
        `metadata.annotations[${RESOLVE_INTERVAL}]`,
        'MLT_CONFIG_RANGE',
        `must be a whole number of seconds 1-3600, got ${show(rawInterval)}`,
      )
    } else intervalSeconds = n
  }

  return {
    kind: 'Deployment',
    meta,
    spec: {
      replicas,
      selector,
      template: {
        labels,
        annotations,
        spec: pod?.spec ?? { nodeName: null, hostname: null, subdomain: null, containers: [] },
      },
    },
    discovery: { dnsName: dnsName.replace(/\.$/, ''), intervalSeconds },
  }
}
