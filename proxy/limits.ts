// Connection limits of the Ingress listeners (nginx's `worker_connections` role). Without a cap, ~20k idle client
// connections exhaust the process's file descriptors, and then health probes, DNS over TCP, admin and L4 fail with
// the Ingress. Each listener accepts at most `maxConnections` client connections; at the cap the oldest idle
// keep-alive connection is closed to make room, and a new connection is refused only when none is idle.
//
// RLIMIT_NOFILE: Node raises the soft limit to the hard limit itself at start (src/node.cc, PlatformInit), and it has
// no public setrlimit, so meshlet only reads the result (Linux: /proc/self/limits) to size the default cap.

import { readFileSync } from 'node:fs'

export interface FileLimit {
  readonly soft: number
  readonly hard: number
}

/** The process's RLIMIT_NOFILE, from /proc/self/limits; null where that file does not exist (not Linux). */
export function readFileLimit(text?: string): FileLimit | null {
  let t = text
  if (t === undefined) {
    try {
      t = readFileSync('/proc/self/limits', 'latin1')
    } catch {
      return null // no procfs: the default cap falls back to FALLBACK_LIMIT
    }
  }
  const m = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(t)
  if (m === null) return null
  const n = (s: string) => (s === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(s))
  return { soft: n(m[1]!), hard: n(m[2]!) }
}

/** Assumed descriptor limit when it cannot be read (the usual Linux default). */
const FALLBACK_LIMIT = 1024
/** Descriptors kept for everything but the Ingress (probes, DNS, admin, L4, files, the event loop): at most 1024. */
const RESERVE_MAX = 1024
/** Highest default cap per listener (nginx-ingress's worker_connections is 16384 per worker). */
const DEFAULT_CAP_MAX = 65536
const DEFAULT_CAP_MIN = 16

/**
 * The default per-listener cap for a descriptor limit: keep min(1024, a quarter) of the descriptors for the rest of
 * meshlet, and split the others between two listeners, each client connection counting twice (its upstream one).
 * 20000 → 4744; 1024 → 192; 1048576 → 65536.
 */
export function defaultMaxConnections(nofile: number | null): number {
  const limit = nofile ?? FALLBACK_LIMIT
  const reserve = Math.min(RESERVE_MAX, Math.floor(limit / 4))
  const cap = Math.floor((limit - reserve) / 4)
  return Math.max(DEFAULT_CAP_MIN, Math.min(DEFAULT_CAP_MAX, cap))
}
