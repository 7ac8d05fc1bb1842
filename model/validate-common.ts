// Shared pieces of validation: the error collector, typed field readers that report type errors with their path, and
// the name/IP rules of the API server (k8s.io/apimachinery/pkg/util/validation). Every reader reports and returns a
// safe fallback, so one object's validation runs to the end and collects ALL its errors.

import type { ObjectError } from './snapshot.ts'
import type { LabelSelector, Protocol, SourceRef } from './objects.ts'
import type { ConfigErrorCode } from './config-errors.ts'
import { ipFamily } from './ip.ts'
import ipaddr from 'ipaddr.js'

export type Obj = Record<string, unknown>

/**
 * Bounds on what one manifest may hold, so that no file can stall or bloat the process (issue 13 item 11). Each is
 * checked before the work it bounds, and breaking one is an MLT_CONFIG_LIMIT error naming the limit.
 */
export const MANIFEST_LIMITS = {
  /**
   * Bytes per file (or stdin): the Kubernetes API server's request limit (3 MiB), so anything `kubectl apply` takes
   * fits. Checked before the file is read whole.
   */
  fileBytes: 3 * 1024 * 1024,
  /** Nesting of maps and lists in one document; a Pod inside a List needs about 12. */
  depth: 64,
  /** spec.ports of one Service: an EndpointSlice holds at most 100 ports, so more could never all get endpoints. */
  servicePorts: 100,
  /** Paths over all spec.rules of one Ingress (each one is a route, and a regex path is compiled at load). */
  ingressPaths: 1000,
} as const

/**
 * Counts that are cheap to read from the raw document and costly to validate item by item (duplicate checks are
 * quadratic): a Service's ports, an Ingress's paths. Adds an MLT_CONFIG_LIMIT error and returns false when one is over
 * its limit; the caller then skips the object's validation.
 */
export function withinCountLimits(ctx: Ctx, kind: string, doc: Obj): boolean {
  const spec = isObj(doc.spec) ? doc.spec : null
  if (spec === null) return true
  if (kind === 'Service' && Array.isArray(spec.ports) && spec.ports.length > MANIFEST_LIMITS.servicePorts) {
    ctx.add(
      'spec.ports',
      'MLT_CONFIG_LIMIT',
      `at most ${MANIFEST_LIMITS.servicePorts} ports per Service (as many as an EndpointSlice holds), got ${spec.ports.length}`,
    )
    return false
  }
  if (kind === 'Ingress' && Array.isArray(spec.rules)) {
    let paths = 0
    for (const r of spec.rules) {
      const http = isObj(r) && isObj(r.http) ? r.http : null
      if (http !== null && Array.isArray(http.paths)) paths += http.paths.length
    }
    if (paths > MANIFEST_LIMITS.ingressPaths) {
      ctx.add(
        'spec.rules',
        'MLT_CONFIG_LIMIT',
        `at most ${MANIFEST_LIMITS.ingressPaths} paths per Ingress (over all rules), got ${paths}`,
      )
      return false
    }
  }
  return true
}

export function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/** A value as an error message shows it: strings quoted, others as JSON, long ones cut. */
export function show(v: unknown): string {
  let s: string
  if (v === undefined) s = 'nothing'
  else if (typeof v === 'string') s = JSON.stringify(v)
  else if (typeof v === 'number' || typeof v === 'boolean' || v === null) s = String(v)
  else s = JSON.stringify(v) ?? String(v)
  return s.length > 80 ? s.slice(0, 77) + '...' : s
}

function typeName(v: unknown): string {
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'a list'
  if (typeof v === 'object') return 'a map'
  if (typeof v === 'number') return Number.isInteger(v) ? 'an integer' : 'a number'
  return `a ${typeof v}`
}

/** Collects the errors of one object; the object label is set once kind/name are known. */
export class Ctx {
  readonly errors: ObjectError[] = []
  readonly source: SourceRef
  readonly prefix: string
  object: string | null = null

  constructor(source: SourceRef, prefix: string) {
    this.source = source
    this.prefix = prefix
  }

  add(path: string, code: ConfigErrorCode, message: string): void {
    const full = this.prefix === '' ? path : path === '' ? this.prefix : `${this.prefix}.${path}`
    this.errors.push({ source: this.source, object: this.object, path: full, code, message })
  }

  typeError(path: string, want: string, got: unknown): void {
    this.add(path, 'MLT_CONFIG_TYPE', `must be ${want}, got ${typeName(got)} ${show(got)}`)
  }

  /** A type error that names the type only, never the value (Secret data: model/validate-secret.ts). */
  typeErrorHidden(path: string, want: string, got: unknown): void {
    this.add(path, 'MLT_CONFIG_TYPE', `must be ${want}, got ${typeName(got)} (the value is not shown)`)
  }

  // -------------------------------------------------------------- readers: absent (undefined/null) → fallback

  str(o: Obj, key: string, path: string): string | null {
    const v = o[key]
    if (v === undefined || v === null) return null
    if (typeof v !== 'string') {
      this.typeError(path, 'a string', v)
      return null
    }
    return v
  }

  /** A required non-empty string. */
  reqStr(o: Obj, key: string, path: string): string | null {
    const v = this.str(o, key, path)
    if (v === null && (o[key] === undefined || o[key] === null)) this.add(path, 'MLT_CONFIG_REQUIRED', 'required')
    else if (v === '') this.add(path, 'MLT_CONFIG_REQUIRED', 'required, got ""')
    return v === '' ? null : v
  }

  int(o: Obj, key: string, path: string): number | null {
    const v = o[key]
    if (v === undefined || v === null) return null
    if (typeof v !== 'number' || !Number.isInteger(v)) {
      this.typeError(path, 'an integer', v)
      return null
    }
    return v
  }

  bool(o: Obj, key: string, path: string): boolean | null {
    const v = o[key]
    if (v === undefined || v === null) return null
    if (typeof v !== 'boolean') {
      this.typeError(path, 'true or false', v)
      return null
    }
    return v
  }

  obj(o: Obj, key: string, path: string): Obj | null {
    const v = o[key]
    if (v === undefined || v === null) return null
    if (!isObj(v)) {
      this.typeError(path, 'a map', v)
      return null
    }
    return v
  }

  arr(o: Obj, key: string, path: string): unknown[] {
    const v = o[key]
    if (v === undefined || v === null) return []
    if (!Array.isArray(v)) {
      this.typeError(path, 'a list', v)
      return []
    }
    return v
  }

  /** A list of maps; non-map items are reported and skipped (their index is kept in `i`). */
  objs(o: Obj, key: string, path: string): { item: Obj; i: number; path: string }[] {
    const out: { item: Obj; i: number; path: string }[] = []
    for (const [i, v] of this.arr(o, key, path).entries()) {
      const p = `${path}[${i}]`
      if (!isObj(v)) this.typeError(p, 'a map', v)
      else out.push({ item: v, i, path: p })
    }
    return out
  }

  strList(o: Obj, key: string, path: string): string[] {
    const out: string[] = []
    for (const [i, v] of this.arr(o, key, path).entries()) {
      if (typeof v !== 'string') this.typeError(`${path}[${i}]`, 'a string', v)
      else out.push(v)
    }
    return out
  }

  /** map[string]string (labels, selectors, annotations). */
  strMap(o: Obj, key: string, path: string): Record<string, string> {
    const m = this.obj(o, key, path)
    const out: Record<string, string> = {}
    if (!m) return out
    for (const [k, v] of Object.entries(m)) {
      if (typeof v !== 'string') this.typeError(`${path}[${k}]`, 'a string', v)
      else out[k] = v
    }
    return out
  }

  // -------------------------------------------------------------- checks

  range(path: string, v: number | null, min: number, max: number): number | null {
    if (v === null) return null
    if (v < min || v > max) {
      this.add(
        path,
        'MLT_CONFIG_RANGE',
        max === Infinity ? `must be >= ${min}, got ${v}` : `must be ${min}-${max}, got ${v}`,
      )
      return null
    }
    return v
  }

  enumOf<T extends string>(path: string, v: string | null, allowed: readonly T[], fallback: T): T {
    if (v === null) return fallback
    if (!(allowed as readonly string[]).includes(v)) {
      this.add(path, 'MLT_CONFIG_ENUM', `must be one of ${allowed.join(', ')}, got ${show(v)}`)
      return fallback
    }
    return v as T
  }

  protocol(o: Obj, key: string, path: string): Protocol {
    return this.enumOf(path, this.str(o, key, path), ['TCP', 'UDP', 'SCTP'], 'TCP')
  }

  name(path: string, v: string, rule: NameRule): boolean {
    const why = NAME_RULES[rule](v)
    if (why !== null) this.add(path, 'MLT_CONFIG_INVALID_NAME', `${why}, got ${show(v)}`)
    return why === null
  }

  labels(o: Obj, key: string, path: string, values: 'label' | 'any'): Record<string, string> {
    const m = this.strMap(o, key, path)
    for (const [k, v] of Object.entries(m)) {
      const why = qualifiedName(k)
      if (why !== null) this.add(`${path}[${k}]`, 'MLT_CONFIG_INVALID_NAME', `key ${why}, got ${show(k)}`)
      if (values === 'label') {
        const bad = labelValue(v)
        if (bad !== null) this.add(`${path}[${k}]`, 'MLT_CONFIG_INVALID_VALUE', `${bad}, got ${show(v)}`)
      }
    }
    return m
  }

  /** A port given as a number (1-65535) or an IANA_SVC_NAME (IntOrString). */
  portOrName(o: Obj, key: string, path: string): number | string | null {
    const v = o[key]
    if (v === undefined || v === null) return null
    if (typeof v === 'number') {
      if (!Number.isInteger(v)) {
        this.typeError(path, 'an integer or a port name', v)
        return null
      }
      return this.range(path, v, 1, 65535)
    }
    if (typeof v === 'string') {
      const why = ianaSvcName(v)
      if (why !== null) {
        this.add(path, 'MLT_CONFIG_INVALID_NAME', `must be a port number or ${why}, got ${show(v)}`)
        return null
      }
      return v
    }
    this.typeError(path, 'an integer or a port name', v)
    return null
  }

  /** An IP address (any family); returns the canonical text. */
  ip(path: string, v: string, opts: { endpoint?: boolean; family?: 4 | 6 } = {}): string | null {
    const fam = ipFamily(v)
    if (fam === 0) {
      this.add(path, 'MLT_CONFIG_INVALID_IP', `must be a valid IP address, got ${show(v)}`)
      return null
    }
    if (opts.family !== undefined && fam !== opts.family) {
      this.add(path, 'MLT_CONFIG_INVALID_IP', `must be an IPv${opts.family} address, got ${show(v)}`)
      return null
    }
    const addr = ipaddr.parse(v)
    if (opts.endpoint) {
      // The API server's endpoint rules (ValidateEndpointIP), except loopback: meshlet's backends usually live on the
      // same host (DESIGN.md, "Objects understood").
      const r = addr.range()
      const why =
        r === 'unspecified'
          ? 'may not be unspecified (0.0.0.0 or ::)'
          : r === 'linkLocal'
            ? 'may not be in the link-local range (169.254.0.0/16, fe80::/10)'
            : isLinkLocalMulticast(addr)
              ? 'may not be in the link-local multicast range (224.0.0.0/24, ff02::/16)'
              : null
      if (why !== null) {
        this.add(path, 'MLT_CONFIG_INVALID_IP', `${why}, got ${show(v)}`)
        return null
      }
    }
    return addr.toString()
  }

  labelSelectors(o: Obj, key: string, path: string): LabelSelector[] {
    return this.objs(o, key, path).map(({ item, path: p }) => this.labelSelector(item, p))
  }

  labelSelector(o: Obj, path: string): LabelSelector {
    const matchLabels = this.labels(o, 'matchLabels', `${path}.matchLabels`, 'label')
    const matchExpressions: LabelSelector['matchExpressions'][number][] = []
    for (const { item, path: p } of this.objs(o, 'matchExpressions', `${path}.matchExpressions`)) {
      const key = this.reqStr(item, 'key', `${p}.key`)
      if (key !== null) {
        const why = qualifiedName(key)
        if (why !== null) this.add(`${p}.key`, 'MLT_CONFIG_INVALID_NAME', `${why}, got ${show(key)}`)
      }
      const opRaw = this.reqStr(item, 'operator', `${p}.operator`)
      const operator = this.enumOf(`${p}.operator`, opRaw, ['In', 'NotIn', 'Exists', 'DoesNotExist'] as const, 'Exists')
      const values = this.strList(item, 'values', `${p}.values`)
      if (opRaw === operator && (operator === 'In' || operator === 'NotIn') && values.length === 0) {
        this.add(`${p}.values`, 'MLT_CONFIG_REQUIRED', `must be non-empty when operator is ${operator}`)
      }
      if (opRaw === operator && (operator === 'Exists' || operator === 'DoesNotExist') && values.length > 0) {
        this.add(`${p}.values`, 'MLT_CONFIG_FORBIDDEN', `must be empty when operator is ${operator}`)
      }
      if (key !== null) matchExpressions.push({ key, operator, values })
    }
    return { matchLabels, matchExpressions }
  }
}

function isLinkLocalMulticast(addr: ipaddr.IPv4 | ipaddr.IPv6): boolean {
  if (addr.kind() === 'ipv4') return addr.match(ipaddr.parse('224.0.0.0'), 24)
  return addr.match(ipaddr.parse('ff02::'), 16)
}

// ---------------------------------------------------------------- name rules (apimachinery validation.go)

const LABEL_1123 = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/
const LABEL_1035 = /^[a-z]([-a-z0-9]*[a-z0-9])?$/
const QUALIFIED = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/

export function dns1123Label(v: string): string | null {
  if (v.length > 63 || !LABEL_1123.test(v)) {
    return "must be a DNS-1123 label (at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit)"
  }
  return null
}

export function dns1035Label(v: string): string | null {
  if (v.length > 63 || !LABEL_1035.test(v)) {
    return "must be a DNS-1035 label (at most 63 lowercase letters, digits or '-', starting with a letter, ending with a letter or digit)"
  }
  return null
}

export function dns1123Subdomain(v: string): string | null {
  if (v.length === 0 || v.length > 253 || !v.split('.').every((l) => l.length <= 63 && LABEL_1123.test(l))) {
    return "must be a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', each part starting and ending with a letter or digit, at most 253 characters)"
  }
  return null
}

/** Label and annotation keys: an optional DNS-1123 subdomain prefix and '/', then a name of at most 63 characters. */
export function qualifiedName(v: string): string | null {
  const slash = v.indexOf('/')
  const prefix = slash === -1 ? null : v.slice(0, slash)
  const name = slash === -1 ? v : v.slice(slash + 1)
  if (prefix !== null && dns1123Subdomain(prefix) !== null) return 'must have a DNS-1123 subdomain as its prefix'
  if (name.length === 0 || name.length > 63 || !QUALIFIED.test(name)) {
    return "must be a qualified name (at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit, optionally prefixed with a DNS subdomain and '/')"
  }
  return null
}

export function labelValue(v: string): string | null {
  if (v === '') return null
  if (v.length > 63 || !QUALIFIED.test(v)) {
    return "must be a valid label value (at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"
  }
  return null
}

/** Port names (RFC 6335): at most 15 lowercase letters, digits and '-', at least one letter, no '--'. */
export function ianaSvcName(v: string): string | null {
  if (
    v.length === 0 ||
    v.length > 15 ||
    !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(v) ||
    v.includes('--') ||
    !/[a-z]/.test(v)
  ) {
    return "a port name (IANA_SVC_NAME: at most 15 lowercase letters, digits and '-', with at least one letter, no '--')"
  }
  return null
}

export const NAME_RULES = {
  label: dns1123Label,
  label1035: dns1035Label,
  subdomain: dns1123Subdomain,
  qualified: qualifiedName,
  port: (v: string) => {
    const why = ianaSvcName(v)
    return why === null ? null : `must be ${why}`
  },
} as const

export type NameRule = keyof typeof NAME_RULES

export const HTTP_HEADER_NAME = /^[-A-Za-z0-9!#$%&'*+.^_`|~]+$/
