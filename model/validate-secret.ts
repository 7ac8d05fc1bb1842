// v1 Secret: only kubernetes.io/tls Secrets matter to meshlet (Ingress `tls`). `data` values are base64 and
// `stringData` values are plain text; stringData wins for a key in both, as the API server merges them.
//
// No error about a value ever quotes it: errors reach the log and /status, and a Secret's values are the one thing a
// manifest holds that those readers must not see. Errors name the key (keys are not secret) and the kind of problem.

import type { ObjectMeta, Secret } from './objects.ts'
import { type Ctx, type Obj, isObj, show } from './validate-common.ts'

const KEY = /^[-._a-zA-Z0-9]+$/
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/
const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]+?-----END \1-----/

export function validateSecret(ctx: Ctx, doc: Obj, meta: ObjectMeta): Secret {
  const type = ctx.str(doc, 'type', 'type') || 'Opaque'
  const values = new Map<string, { text: string; path: string }>()

  const data = secretMap(ctx, doc, 'data')
  for (const [k, v] of Object.entries(data)) {
    const path = `data[${k}]`
    if (!checkKey(ctx, path, k)) continue
    if (typeof v !== 'string') {
      ctx.typeErrorHidden(path, 'a base64 string', v)
      continue
    }
    const compact = v.replace(/\s+/g, '')
    if (compact.length % 4 !== 0 || !BASE64.test(compact)) {
      ctx.add(
        path,
        'MLT_CONFIG_INVALID_BASE64',
        'must be base64 (use stringData for plain text); the value is not shown',
      )
      continue
    }
    values.set(k, { text: Buffer.from(compact, 'base64').toString('utf8'), path })
  }
  const stringData = secretMap(ctx, doc, 'stringData')
  for (const [k, v] of Object.entries(stringData)) {
    const path = `stringData[${k}]`
    if (!checkKey(ctx, path, k)) continue
    if (typeof v !== 'string') {
      ctx.typeErrorHidden(path, 'a string', v)
      continue
    }
    values.set(k, { text: v, path })
  }

  let tls: Secret['tls'] = null
  if (type === 'kubernetes.io/tls') {
    const pem = (key: 'tls.crt' | 'tls.key', what: RegExp): string | null => {
      const entry = values.get(key)
      if (entry === undefined) {
        if (!Object.hasOwn(data, key) && !Object.hasOwn(stringData, key)) {
          ctx.add(`data[${key}]`, 'MLT_CONFIG_REQUIRED', 'required for a Secret of type kubernetes.io/tls')
        }
        return null
      }
      const m = PEM_BLOCK.exec(entry.text)
      if (m === null || !what.test(m[1] ?? '')) {
        ctx.add(
          entry.path,
          'MLT_CONFIG_INVALID_PEM',
          `must hold a PEM ${key === 'tls.crt' ? 'CERTIFICATE' : 'PRIVATE KEY'} block`,
        )
        return null
      }
      return entry.text
    }
    const cert = pem('tls.crt', /^CERTIFICATE$/)
    const key = pem('tls.key', /PRIVATE KEY$/)
    if (cert !== null && key !== null) tls = { cert, key }
  }
  return { kind: 'Secret', meta, type, tls }
}

/** `data` or `stringData`: a map, or {} with a type error that does not show what was there instead. */
function secretMap(ctx: Ctx, doc: Obj, key: 'data' | 'stringData'): Obj {
  const v = doc[key]
  if (v === undefined || v === null) return {}
  if (isObj(v)) return v
  ctx.typeErrorHidden(key, 'a map', v)
  return {}
}

function checkKey(ctx: Ctx, path: string, k: string): boolean {
  if (k.length > 253 || !KEY.test(k)) {
    ctx.add(path, 'MLT_CONFIG_INVALID_NAME', `key must consist of letters, digits, '-', '_' or '.', got ${show(k)}`)
    return false
  }
  return true
}
