// What one probe attempt produced. Handlers never throw: every way a probe can go wrong is a failure with a message
// (what /status and the transition log show) and, when there is one, the HealthError code behind it.

import type { HealthErrorCode } from '../errors.ts'

export interface ProbeOutcome {
  readonly ok: boolean
  /** kubelet's ProbeWarning: counted as a success, shown in /status (a redirect to another host). */
  readonly warning: boolean
  /** Empty on a plain success. Bounded: never a whole response body or command output. */
  readonly message: string
  readonly code: HealthErrorCode | null
}

export const SUCCESS: ProbeOutcome = { ok: true, warning: false, message: '', code: null }

export function success(message: string): ProbeOutcome {
  return { ok: true, warning: false, message, code: null }
}

export function warning(message: string): ProbeOutcome {
  return { ok: true, warning: true, message, code: null }
}

export function failure(message: string, code: HealthErrorCode | null = null): ProbeOutcome {
  return { ok: false, warning: false, message, code }
}

/** kubelet probes say who they are as kube-probe/<major>.<minor>; meshlet follows the Kubernetes minor it tracks. */
export const KUBE_PROBE_USER_AGENT = 'kube-probe/1.34'

/** kubelet reads at most this much of an HTTP body or of a command's output. */
export const MAX_BODY_BYTES = 10 * 1024

/** Error text as Go's dialer would phrase it, short enough for a log line. */
export function describeError(err: unknown): string {
  const e = err as NodeJS.ErrnoException
  switch (e.code) {
    case 'ECONNREFUSED':
      return 'connect: connection refused'
    case 'ECONNRESET':
      return 'connection reset by peer'
    case 'EHOSTUNREACH':
      return 'connect: no route to host'
    case 'ENETUNREACH':
      return 'connect: network is unreachable'
    case 'EPIPE':
      return 'broken pipe'
    default:
      return e.message ?? String(err)
  }
}
