// Request-target and Host normalisation (specs/ingress.md §1.4, steps H1..H6 and P1..P6). The normalised path is
// both the matching key and the path sent upstream, so the router and the backend never see two different paths.
//
// Hot path: most requests carry a clean path ("/api/v1/items?x=1") and a clean Host ("shop.example.com:8080"); both
// are recognised by one scan without allocating. Only paths with "%", "//", "/." or other suspicious bytes go
// through the segment-by-segment slow path.

/** How escaped separators (%2F, %5C) in a path are treated (spec P6). */
export type EscapedSlashes = 'keep' | 'reject'

export interface PathOptions {
  /** P4: merge runs of "/" (default true). */
  readonly mergeSlashes: boolean
  /** P6: keep %2F/%5C as data (default) or answer 400. */
  readonly escapedSlashes: EscapedSlashes
}

export const DEFAULT_PATH_OPTIONS: PathOptions = { mergeSlashes: true, escapedSlashes: 'keep' }

const HEX = '0123456789ABCDEF'

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48
  if (c >= 65 && c <= 70) return c - 55
  if (c >= 97 && c <= 102) return c - 87
  return -1
}

/** RFC 3986 unreserved: ALPHA / DIGIT / "-" / "." / "_" / "~" */
function isUnreserved(c: number): boolean {
  return (
    (c >= 97 && c <= 122) ||
    (c >= 65 && c <= 90) ||
    (c >= 48 && c <= 57) ||
    c === 45 ||
    c === 46 ||
    c === 95 ||
    c === 126
  )
}

/**
 * P3 only: decode %XX of unreserved characters, uppercase the hex of the other escapes. Returns null for a "%" not
 * followed by two hex digits, or %00. Used for rule paths at compile time and inside `normalizePath`.
 */
export function decodeUnreserved(path: string): string | null {
  let i = path.indexOf('%')
  if (i < 0) return path
  let out = path.slice(0, i)
  const n = path.length
  for (; i < n; i++) {
    const c = path.charCodeAt(i)
    if (c !== 37) {
      out += path[i]
      continue
    }
    if (i + 2 >= n) return null // fewer than two characters follow
    const h = hexValue(path.charCodeAt(i + 1))
    const l = hexValue(path.charCodeAt(i + 2))
    if (h < 0 || l < 0) return null
    const v = h * 16 + l
    if (v === 0) return null
    if (isUnreserved(v)) out += String.fromCharCode(v)
    else out += '%' + HEX[h] + HEX[l]
    i += 2
  }
  return out
}

/**
 * P4 + P5 over a path that starts with "/": merge slashes (optional), remove dot segments (RFC 3986 §5.2.4; ".."
 * above the root is dropped). A trailing "/" (or a final "." / "..") leaves a trailing "/".
 */
function resolveSegments(path: string, mergeSlashes: boolean): string {
  const parts = path.split('/')
  const out: string[] = []
  const last = parts.length - 1
  let trailing = false
  // parts[0] is "" (the path starts with "/")
  for (let i = 1; i <= last; i++) {
    const seg = parts[i]!
    if (seg === '.') {
      if (i === last) trailing = true
      continue
    }
    if (seg === '..') {
      out.pop()
      if (i === last) trailing = true
      continue
    }
    if (seg === '') {
      if (i === last) trailing = true
      else if (!mergeSlashes) out.push('')
      continue
    }
    out.push(seg)
  }
  if (out.length === 0) return '/'
  return trailing ? '/' + out.join('/') + '/' : '/' + out.join('/')
}

/**
 * Normalises the path part of a request-target (no query). Returns null when the request must be answered 400
 * (P2: "\", bad or NUL escapes; P6 reject mode: %2F or %5C).
 */
export function normalizePath(path: string, opts: PathOptions = DEFAULT_PATH_OPTIONS): string | null {
  const n = path.length
  let clean = true
  for (let i = 0; i < n; i++) {
    const c = path.charCodeAt(i)
    if (c === 37 /* % */ || c === 92 /* \ */) {
      clean = false
      break
    }
    if (c === 47 /* / */ && i + 1 < n) {
      const d = path.charCodeAt(i + 1)
      if (d === 47 || d === 46) {
        clean = false
        break
      }
    }
  }
  if (clean) return path
  if (path.indexOf('\\') >= 0) return null
  const decoded = decodeUnreserved(path)
  if (decoded === null) return null
  if (opts.escapedSlashes === 'reject' && /%2F|%5C/.test(decoded)) return null
  return resolveSegments(decoded, opts.mergeSlashes)
}

/** The parts of a request-target after P1 and P2: authority (absolute-form only), path (normalised), query. */
export interface Target {
  /** The authority of an absolute-form target, null for origin-form. */
  authority: string | null
  path: string
  /** "" when the target had no "?"; otherwise "?" + the raw query. */
  query: string
}

/**
 * Splits and normalises a request-target. Origin-form ("/p?q") and absolute-form ("http://h/p?q") are accepted;
 * anything else ("*", "a", "//h") and any "#" answer 400 (null). `out` is reused by the caller to avoid allocating.
 */
export function parseTarget(url: string, opts: PathOptions, out: Target): boolean {
  let start = 0
  out.authority = null
  if (url.charCodeAt(0) !== 47) {
    const lower = url.slice(0, 8).toLowerCase()
    if (lower.startsWith('http://')) start = 7
    else if (lower.startsWith('https://')) start = 8
    else return false
    let end = start
    while (end < url.length) {
      const c = url.charCodeAt(end)
      if (c === 47 || c === 63 || c === 35) break
      end++
    }
    out.authority = url.slice(start, end)
    start = end
  }
  if (url.indexOf('#', start) >= 0) return false
  const q = url.indexOf('?', start)
  let path: string
  if (q < 0) {
    path = start === 0 ? url : url.slice(start)
    out.query = ''
  } else {
    path = url.slice(start, q)
    out.query = url.slice(q)
  }
  if (path === '') path = '/'
  else if (path.charCodeAt(0) !== 47) return false
  const norm = normalizePath(path, opts)
  if (norm === null) return false
  out.path = norm
  return true
}

// RFC 3986 reg-name = *( unreserved / pct-encoded / sub-delims ); sub-delims = ! $ & ' ( ) * + , ; =
const REG_NAME = new Uint8Array(128)
for (let c = 0; c < 128; c++) {
  if (isUnreserved(c) || "!$&'()*+,;=%".includes(String.fromCharCode(c))) REG_NAME[c] = 1
}

/**
 * H3..H5: splits off and checks the port, checks the name against reg-name (or a bracketed IP literal), lowercases
 * and strips one trailing dot. Returns null for a Host that must be answered 400. "" stays "" (allowed, H4).
 */
export function normalizeHost(raw: string): string | null {
  const n = raw.length
  if (n === 0) return ''
  let nameEnd = n
  if (raw.charCodeAt(0) === 91 /* [ */) {
    const close = raw.indexOf(']')
    if (close < 0) return null
    for (let i = 1; i < close; i++) {
      const c = raw.charCodeAt(i)
      // IPv6 / IPvFuture literal characters
      if (!(hexValue(c) >= 0 || c === 58 || c === 46 || c === 118 || c === 86)) return null
    }
    if (close + 1 < n) {
      if (raw.charCodeAt(close + 1) !== 58 || !validPort(raw, close + 2)) return null
    }
    return raw.slice(0, close + 1).toLowerCase()
  }
  const colon = raw.indexOf(':')
  if (colon >= 0) {
    if (!validPort(raw, colon + 1)) return null
    nameEnd = colon
  }
  let lower = false
  for (let i = 0; i < nameEnd; i++) {
    const c = raw.charCodeAt(i)
    if (c >= 128 || REG_NAME[c] !== 1) return null
    if (c >= 65 && c <= 90) lower = true
    if (
      c === 37 /* % */ &&
      (hexValue(raw.charCodeAt(i + 1)) < 0 || hexValue(raw.charCodeAt(i + 2)) < 0 || i + 2 >= nameEnd)
    ) {
      return null
    }
  }
  let name = nameEnd === n ? raw : raw.slice(0, nameEnd)
  if (lower) name = name.toLowerCase()
  if (name.length > 0 && name.charCodeAt(name.length - 1) === 46) name = name.slice(0, -1)
  return name
}

/** A Host port: 1 to 5 digits, at most 65535 (RFC 3986 allows any digits; no TCP port is above 65535). */
function validPort(s: string, from: number): boolean {
  const len = s.length - from
  if (len < 1 || len > 5) return false
  let v = 0
  for (let i = from; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 48 || c > 57) return false
    v = v * 10 + c - 48
  }
  return v <= 65535
}

/** The host part of a Host value, port removed, case kept (redirect Location uses the host as sent). */
export function hostWithoutPort(raw: string): string {
  if (raw.charCodeAt(0) === 91) {
    const close = raw.indexOf(']')
    return close < 0 ? raw : raw.slice(0, close + 1)
  }
  const colon = raw.indexOf(':')
  return colon < 0 ? raw : raw.slice(0, colon)
}
