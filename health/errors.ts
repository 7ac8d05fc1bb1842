// health/'s error catalogue (STYLE.md "Errors"), code → { what happened, what to do }: one code per way a probe or an ejection can go wrong. A probe that
// fails is a result, not an error; these codes name *why* it failed, so /status and the logs can say so and callers
// branch on `code`, never on message text.

import { catalogueError, defineCatalogue } from '../model/errors.ts'

export const HEALTH_ERRORS = defineCatalogue({
  /** The probe did not finish within timeoutSeconds (connect + request + response, or the exec'd command). */
  MLT_HEALTH_TIMEOUT: {
    message: 'probe timed out',
    fix: 'check the probed endpoint answers within timeoutSeconds (curl -m SECONDS from this host); raise timeoutSeconds if it is slow but healthy',
  },
  /** Connect refused, reset, unreachable, or the peer closed before a full answer. */
  MLT_HEALTH_CONNECT: {
    message: 'connection failed',
    fix: 'check that the container listens on the probed port and address (ss -ltn inside it) and that the port in the probe matches',
  },
  /** The answer could not be parsed (a malformed HTTP head, a gRPC frame that is not a HealthCheckResponse). */
  MLT_HEALTH_PROTOCOL: {
    message: 'protocol error',
    fix: 'make the probe match what the port speaks: httpGet for HTTP/1.1 (scheme: HTTPS for TLS), grpc for a gRPC health service, tcpSocket otherwise',
  },
  /** More than 10 redirects to the same host (kubelet: "stopped after 10 redirects"). */
  MLT_HEALTH_REDIRECTS: {
    message: 'too many redirects',
    fix: "point the probe's path at a URL that answers without redirecting (often the path with or without a trailing slash)",
  },
  /** The exec'd command could not start (ENOENT, EACCES): counted as a failure, like exit 127. */
  MLT_HEALTH_SPAWN: {
    message: 'command could not start',
    fix: 'check that the exec command exists where it runs (this host, or inside the container with --exec-prefix) and is executable',
  },
  /** httpGet or tcpSocket without a host on a Pod that has no status.podIP. */
  MLT_HEALTH_NO_POD_IP: {
    message: 'the Pod has no status.podIP',
    fix: 'set status.podIP on the Pod (the Compose integration fills it), or give the probe an explicit host',
  },
  /** A meshlet.io/outlier-* annotation that does not parse; the default is used instead. */
  MLT_HEALTH_OUTLIER_ANNOTATION: {
    message: 'invalid outlier annotation',
    fix: 'write the meshlet.io/outlier-* annotation the message names as a whole number in its range (failures 1+, seconds 1-86400, percent 0-100; health/README.md); the default applies meanwhile',
  },
})

export type HealthErrorCode = keyof typeof HEALTH_ERRORS

export class HealthError extends catalogueError('HealthError', HEALTH_ERRORS) {}
