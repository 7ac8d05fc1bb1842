// Strict field checking, as `kubectl apply --validate=strict` does: a field that is not in the Kubernetes API for its
// kind (`spec.selectr`) is reported with its path. It is a warning (code MLT_CONFIG_UNKNOWN_FIELD) in `meshlet up`
// (logged once per change of the file, shown in /status; the object is used as if the field were absent) and an error
// in `meshlet check --strict`.
//
// Known fields are every field of the Kubernetes API for the kind, whether meshlet honours it or not: the API's
// fields meshlet ignores (a Pod's volumes, a Service's sessionAffinityConfig, ...) are valid Kubernetes and must not be
// flagged. They come from config/kube-fields.ts, generated from the Kubernetes OpenAPI schema through the
// `kubernetes-types` typings (tools/kube-fields-gen.ts says how); MetalLB's two CRDs are written below from MetalLB's
// CRD schema (metallb.io/v1beta1). Which fields each component honours is in its README's "Manifests" section.
//
// Duplicate keys: the YAML reader already rejects a document with a key twice (`Map keys must be unique`, with the
// line, MLT_CONFIG_PARSE), which is stricter than kubectl's warning; JSON manifests are checked here
// (duplicateJsonKeys), since JSON.parse keeps the last value silently.

import type { SourceRef } from '../model/objects.ts'
import type { ObjectError } from '../model/snapshot.ts'
import { KUBE_KINDS, KUBE_TYPES } from './kube-fields.ts'

/** MetalLB CRDs (metallb.io/v1beta1), in the shape of KUBE_TYPES; LabelSelector and ObjectMeta are Kubernetes'. */
const METALLB_TYPES: Readonly<Record<string, Readonly<Record<string, string>>>> = {
  IPAddressPool: { apiVersion: '', kind: '', metadata: 'ObjectMeta', spec: 'IPAddressPoolSpec', status: '*' },
  IPAddressPoolSpec: { addresses: '', autoAssign: '', avoidBuggyIPs: '', serviceAllocation: 'ServiceAllocation' },
  ServiceAllocation: {
    namespaceSelectors: 'LabelSelector',
    namespaces: '',
    priority: '',
    serviceSelectors: 'LabelSelector',
  },
  L2Advertisement: { apiVersion: '', kind: '', metadata: 'ObjectMeta', spec: 'L2AdvertisementSpec', status: '*' },
  L2AdvertisementSpec: {
    interfaces: '',
    ipAddressPoolSelectors: 'LabelSelector',
    ipAddressPools: '',
    nodeSelectors: 'LabelSelector',
  },
}

/** At most this many unknown fields reported per document: a hostile file must not fill the log. */
const MAX_PER_DOCUMENT = 20

function fieldsOf(type: string): Readonly<Record<string, string>> | undefined {
  return Object.hasOwn(KUBE_TYPES, type)
    ? KUBE_TYPES[type]
    : Object.hasOwn(METALLB_TYPES, type)
      ? METALLB_TYPES[type]
      : undefined
}

function typeOfKind(kind: string): string | undefined {
  if (Object.hasOwn(KUBE_KINDS, kind)) return KUBE_KINDS[kind]
  return Object.hasOwn(METALLB_TYPES, kind) ? kind : undefined
}

/** The known field closest to a misspelt one (edit distance at most 2), for "did you mean". */
function closest(word: string, known: Readonly<Record<string, string>>): string | null {
  let best: string | null = null
  let bestDistance = 3
  const w = word.toLowerCase()
  for (const k of Object.keys(known)) {
    if (Math.abs(k.length - w.length) >= bestDistance) continue
    const d = distance(w, k.toLowerCase())
    if (d < bestDistance) [best, bestDistance] = [k, d]
  }
  return best
}

function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    const row = [i]
    for (let j = 1; j <= b.length; j++)
      row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1))
    prev = row
  }
  return prev[b.length]!
}

const isMap = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

/**
 * The unknown fields of one parsed document of a kind meshlet reads (none for other kinds), each an ObjectError with
 * code MLT_CONFIG_UNKNOWN_FIELD and the field's path (after `prefix`, "items[3]", for List items).
 */
export function unknownFields(doc: unknown, source: SourceRef, prefix: string, object: string | null): ObjectError[] {
  const out: ObjectError[] = []
  if (!isMap(doc) || typeof doc.kind !== 'string') return out
  const root = typeOfKind(doc.kind)
  if (root === undefined) return out
  const kind = doc.kind
  const walk = (value: unknown, type: string, path: string): void => {
    if (type === '' || type === '*' || out.length >= MAX_PER_DOCUMENT) return
    if (Array.isArray(value)) {
      for (const [i, v] of value.entries()) walk(v, type, `${path}[${i}]`)
      return
    }
    const fields = fieldsOf(type)
    if (!isMap(value) || fields === undefined) return
    for (const [key, v] of Object.entries(value)) {
      const at = path === '' ? key : `${path}.${key}`
      if (Object.hasOwn(fields, key)) walk(v, fields[key]!, at)
      else if (out.length < MAX_PER_DOCUMENT) {
        const hint = closest(key, fields)
        out.push({
          source,
          object,
          path: prefix === '' ? at : `${prefix}.${at}`,
          code: 'MLT_CONFIG_UNKNOWN_FIELD',
          message: `unknown field "${key}": not in the Kubernetes API for ${kind}${hint === null ? '' : `; did you mean "${hint}"?`}`,
        })
      }
    }
  }
  walk(doc, root, '')
  return out
}

/**
 * Keys that appear twice in one JSON object, as unknownFields reports them (code MLT_CONFIG_DUPLICATE_FIELD, with
 * the path). A bounded scan of the text: strings, nesting and keys only, no second parse.
 */
export function duplicateJsonKeys(text: string, source: SourceRef): ObjectError[] {
  const out: ObjectError[] = []
  // One frame per open object or array: its keys seen (objects only), its path, the next array index.
  const stack: { keys: Set<string> | null; path: string; index: number; key: string | null }[] = []
  let expectKey = false
  const pathOf = () => {
    const top = stack[stack.length - 1]
    if (!top) return ''
    if (top.keys === null) return `${top.path}[${top.index}]`
    return top.key === null ? top.path : top.path === '' ? top.key : `${top.path}.${top.key}`
  }
  for (let i = 0; i < text.length && out.length < MAX_PER_DOCUMENT; i++) {
    const c = text[i]
    if (c === '"') {
      let j = i + 1
      while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1
      const top = stack[stack.length - 1]
      if (expectKey && top?.keys) {
        let key: string
        try {
          key = JSON.parse(text.slice(i, j + 1)) as string
        } catch {
          return out // not valid JSON: JSON.parse reports it
        }
        if (top.keys.has(key)) {
          const at = top.path === '' ? key : `${top.path}.${key}`
          out.push({
            source,
            object: null,
            path: at,
            code: 'MLT_CONFIG_DUPLICATE_FIELD',
            message: `duplicate field "${key}": only its last value is used`,
          })
        }
        top.keys.add(key)
        top.key = key
        expectKey = false
      }
      i = j
    } else if (c === '{' || c === '[') {
      const path = pathOf()
      stack.push({ keys: c === '{' ? new Set() : null, path, index: 0, key: null })
      expectKey = c === '{'
    } else if (c === '}' || c === ']') {
      stack.pop()
    } else if (c === ',') {
      const top = stack[stack.length - 1]
      if (top?.keys) expectKey = true
      else if (top) top.index++
    }
  }
  return out
}
