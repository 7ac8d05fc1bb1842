// HTTP header rules shared by every engine and the WebSocket path, written once: the request header classes of the
// one pass in Forwarder.prepare, the hop-by-hop response headers (spec §1.8.4), and small raw-header readers. Names
// are compared without allocating (`eqLower`), since these run on every header of every request.

// Header classes for one pass over the request's raw headers.
export const H_KEEP = 0
export const H_DROP = 1
export const H_HOST = 2
export const H_CONNECTION = 3
export const H_REQUEST_ID = 4
export const H_XFF = 5
export const H_XF_PROTO = 6
export const H_XF_HOST = 7
export const H_XF_PORT = 8
export const H_CONTENT_LENGTH = 9
export const H_TRANSFER_ENCODING = 10
export const H_UPGRADE = 11
export const H_COOKIE = 12
export const H_AUTHORITY = 13
export const H_EXPECT = 14

/** `name` equals the lowercase ASCII literal `lit`, ignoring case (token characters only; see the why below). */
export function eqLower(name: string, lit: string): boolean {
  // `| 0x20` folds A-Z onto a-z and leaves "-" alone; no other token character folds onto a letter or "-".
  for (let i = 0; i < lit.length; i++) if ((name.charCodeAt(i) | 0x20) !== lit.charCodeAt(i)) return false
  return true
}

export function classify(name: string): number {
  // HTTP/2 pseudo-headers: :authority is the host (spec H1); :method, :path, :scheme are already in the head.
  if (name.charCodeAt(0) === 58) return name === ':authority' ? H_AUTHORITY : H_DROP
  switch (name.length) {
    case 2:
      return eqLower(name, 'te') ? H_DROP : H_KEEP
    case 4:
      return eqLower(name, 'host') ? H_HOST : H_KEEP
    case 5:
      return eqLower(name, 'proxy') ? H_DROP : H_KEEP
    case 6:
      if (eqLower(name, 'expect')) return H_EXPECT
      return eqLower(name, 'cookie') ? H_COOKIE : H_KEEP
    case 7:
      return eqLower(name, 'upgrade') ? H_UPGRADE : H_KEEP
    case 8:
      return eqLower(name, 'x-scheme') ? H_DROP : H_KEEP
    case 9:
      return eqLower(name, 'x-real-ip') ? H_DROP : H_KEEP
    case 10:
      if (eqLower(name, 'connection')) return H_CONNECTION
      return eqLower(name, 'keep-alive') ? H_DROP : H_KEEP
    case 12:
      return eqLower(name, 'x-request-id') ? H_REQUEST_ID : H_KEEP
    case 14:
      return eqLower(name, 'content-length') ? H_CONTENT_LENGTH : H_KEEP
    case 15:
      return eqLower(name, 'x-forwarded-for') ? H_XFF : H_KEEP
    case 16:
      if (eqLower(name, 'x-forwarded-host')) return H_XF_HOST
      if (eqLower(name, 'x-forwarded-port')) return H_XF_PORT
      return eqLower(name, 'proxy-connection') ? H_DROP : H_KEEP
    case 17:
      if (eqLower(name, 'x-forwarded-proto')) return H_XF_PROTO
      return eqLower(name, 'transfer-encoding') ? H_TRANSFER_ENCODING : H_KEEP
    case 18:
      return eqLower(name, 'x-forwarded-scheme') ? H_DROP : H_KEEP
    case 24:
      return eqLower(name, 'x-original-forwarded-for') ? H_DROP : H_KEEP
    default:
      return H_KEEP
  }
}

/** Hop-by-hop response headers (spec §1.8.4), on undici's raw Buffer names: the length test spares the string. */
export function dropResponseHeader(b: Buffer): boolean {
  const n = b.length
  if (n !== 10 && n !== 17 && n !== 16 && n !== 7 && n !== 2) return false
  return dropResponseHeaderName(b.toString('latin1'))
}

/** Hop-by-hop response headers (spec §1.8.4), on string names (the raw engine's parser gives strings). */
export function dropResponseHeaderName(s: string): boolean {
  switch (s.length) {
    case 10:
      return eqLower(s, 'connection') || eqLower(s, 'keep-alive')
    case 17:
      return eqLower(s, 'transfer-encoding')
    case 16:
      return eqLower(s, 'proxy-connection')
    case 7:
      return eqLower(s, 'upgrade') || eqLower(s, 'trailer')
    case 2:
      return eqLower(s, 'te')
    default:
      return false
  }
}

/** A Transfer-Encoding value (all its lines joined) that is exactly `chunked`, any case, optional spaces. */
export function isChunkedOnly(te: string): boolean {
  return te.length === 7 ? eqLower(te, 'chunked') : /^[ \t]*chunked[ \t]*$/i.test(te)
}

/** Methods a reset reused connection may be retried for (no body was sent). */
export const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE'])

/** The first value of header `lower` (a lowercase name) in a flat raw header list. */
export function headerValue(raw: readonly string[], lower: string): string | undefined {
  for (let i = 0; i < raw.length; i += 2) {
    const n = raw[i]!
    if (n.length === lower.length && eqLower(n, lower)) return raw[i + 1]
  }
  return undefined
}

/** Parses one cookie's value out of a Cookie header; null when absent. */
export function cookieValue(header: string | undefined, name: string): string | null {
  if (header === undefined) return null
  let i = 0
  while (i < header.length) {
    while (header.charCodeAt(i) === 32) i++
    const eq = header.indexOf('=', i)
    if (eq < 0) return null
    let end = header.indexOf(';', eq)
    if (end < 0) end = header.length
    if (eq - i === name.length && header.startsWith(name, i)) return header.slice(eq + 1, end).trim()
    i = end + 1
  }
  return null
}
