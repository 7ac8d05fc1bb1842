// `meshlet check` runs the same per-Ingress checks as `meshlet up` (specs/ingress.md §1.2): the route table is
// compiled from a Snapshot of the checked objects, exactly as the proxy plane compiles it, and every Ingress it
// rejects is reported. So a manifest that `check` accepts is never rejected by `up` (regexes the linear-time engine
// cannot run, annotation errors, paths, hosts, TLS Secrets that do not load).

import { Registry } from 'prom-client'
import type { KubeObject } from '../model/objects.ts'
import { Store } from '../model/store.ts'
import { ProxyMetrics } from './metrics.ts'
import { DEFAULT_PATH_OPTIONS } from './http/normalize.ts'
import { compile } from './routes/compile.ts'
import { SecureContextCache } from './tls.ts'
import { EndpointRegistry } from './upstream.ts'

export interface IngressProblem {
  /** "namespace/name". */
  readonly ingress: string
  /** "file doc N". */
  readonly source: string
  readonly reasons: readonly string[]
}

/** The Ingresses of `ingressClass` that `meshlet up` would reject, with the reasons it would give. */
export function checkIngresses(objects: readonly KubeObject[], ingressClass: string): IngressProblem[] {
  if (!objects.some((o) => o.kind === 'Ingress')) return []
  const store = new Store({ nodeName: 'check', serviceCidrs: [] })
  store.setObjects(objects, [])
  const snapshot = store.flush()
  if (snapshot === null) return []
  const result = compile({
    snapshot,
    ingressClass,
    pathOptions: DEFAULT_PATH_OPTIONS,
    endpoints: new EndpointRegistry(),
    metrics: new ProxyMetrics(new Registry()),
    contexts: new SecureContextCache(),
    lastGood: new Map(),
  })
  return result.ingresses
    .filter((i) => i.state === 'rejected')
    .map((i) => ({ ingress: i.ingress, source: i.source, reasons: i.reasons }))
}
