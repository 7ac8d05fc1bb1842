// User regexes (use-regex paths, canary-by-header-pattern) run on every request, on the one event loop that also
// serves DNS and L4. V8's backtracking engine can take exponential time on patterns such as `/x(a|aa)+$`, and no
// syntactic heuristic catches them all, so they are compiled by re2js, a linear-time RE2 engine in plain JavaScript
// (Envoy uses RE2 for the same reason). A pattern RE2 cannot take (backreferences, lookaround) is refused at load.
//
// Cost: re2js is slower than V8 on benign patterns (about 0.4 µs for a miss and 2 µs for a match with captures on a
// short path, against 0.1 µs), paid only by requests to a host that has use-regex paths.

import { RE2JS } from 're2js'

/** Longest pattern accepted (ingress-nginx has no limit; 256 keeps compile time and /status small). */
const MAX_PATTERN = 256

export type UserRegex = RE2JS

/** Compiles `src` (case-insensitive when `ignoreCase`), or returns why it cannot be used. */
export function compileRegex(src: string, ignoreCase: boolean): UserRegex | string {
  if (src.length > MAX_PATTERN) return `longer than ${MAX_PATTERN} characters`
  try {
    return RE2JS.compile(src, ignoreCase ? RE2JS.CASE_INSENSITIVE : 0)
  } catch (err) {
    return `not supported by the linear-time (RE2) engine: ${(err as Error).message}`
  }
}

/** Why `src` cannot be a use-regex path (null when it can). */
export function regexReason(src: string): string | null {
  const r = compileRegex(src, true)
  return typeof r === 'string' ? r : null
}

/** Length of the match of `re` at the start of `s`, -1 when none (JavaScript's `^…` with exec). */
export function matchLength(re: UserRegex, s: string): number {
  const m = re.matcher(s)
  return m.lookingAt() ? m.end() : -1
}

/** The capture groups of the match at the start of `s` ([0] the whole match), null when none. */
export function matchGroups(re: UserRegex, s: string): (string | null)[] | null {
  const m = re.matcher(s)
  if (!m.lookingAt()) return null
  const out: (string | null)[] = []
  for (let i = 0; i <= m.groupCount(); i++) out.push(m.group(i))
  return out
}
