// health/'s error catalogue (STYLE.md "Errors"): one code per way a probe or an ejection can go wrong. A probe that
// fails is a result, not an error; these codes name *why* it failed, so /status and the logs can say so and callers
// branch on `code`, never on message text.

import { MeshletError } from '../model/errors.ts'

export const HEALTH_ERRORS = {
  /** The probe did not finish within timeoutSeconds (connect + request + response, or the exec'd command). */
  MLT_HEALTH_TIMEOUT: 'probe timed out',
  /** Connect refused, reset, unreachable, or the peer closed before a full answer. */
  MLT_HEALTH_CONNECT: 'connection failed',
  /** The answer could not be parsed (a malformed HTTP head, a gRPC frame that is not a HealthCheckResponse). */
  MLT_HEALTH_PROTOCOL: 'protocol error',
  /** More than 10 redirects to the same host (kubelet: "stopped after 10 redirects"). */
  MLT_HEALTH_REDIRECTS: 'too many redirects',
  /** The exec'd command could not start (ENOENT, EACCES): counted as a failure, like exit 127. */
  MLT_HEALTH_SPAWN: 'command could not start',
  /** httpGet or tcpSocket without a host on a Pod that has no status.podIP. */
  MLT_HEALTH_NO_POD_IP: 'the Pod has no status.podIP',
  /** A meshlet.io/outlier-* annotation that does not parse; the default is used instead. */
  MLT_HEALTH_OUTLIER_ANNOTATION: 'invalid outlier annotation',
} as const

export type HealthErrorCode = keyof typeof HEALTH_ERRORS

export class HealthError extends MeshletError {
  declare readonly code: HealthErrorCode
  constructor(code: HealthErrorCode, message?: string, options?: { cause?: unknown }) {
    super(code, message ?? HEALTH_ERRORS[code], options)
    this.name = 'HealthError'
  }
}
