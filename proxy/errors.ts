// The proxy's error catalogue (STYLE.md "Errors"): one code per failure, with the HTTP status answered downstream
// when the failure ends a request. Callers branch on `code`, never on message text.

import { MeshletError } from '../model/errors.ts'

export const PROXY_ERRORS = {
  /** The request-target or Host cannot be normalised (spec §1.4): answered 400. */
  MLT_PROXY_BAD_REQUEST: { status: 400, message: 'bad request' },
  /** TRACE and CONNECT are refused, as nginx does. */
  MLT_PROXY_METHOD_NOT_ALLOWED: { status: 405, message: 'method not allowed' },
  /** No vhost, no path and no default backend. */
  MLT_PROXY_NO_ROUTE: { status: 404, message: 'no route' },
  /** The route's Service, port or ready endpoints are missing. */
  MLT_PROXY_NO_ENDPOINTS: { status: 503, message: 'no ready endpoints' },
  /** Connect refused or reset, or the upstream closed before a full response head. */
  MLT_PROXY_UPSTREAM_ERROR: { status: 502, message: 'upstream error' },
  /** The upstream's response does not parse as HTTP/1.1 (a bad status line, header or chunk): answered 502. */
  MLT_PROXY_BAD_RESPONSE: { status: 502, message: 'upstream response does not parse' },
  /** Connect timeout or read timeout before the response head. */
  MLT_PROXY_UPSTREAM_TIMEOUT: { status: 504, message: 'upstream timeout' },
  /** Request body over proxy-body-size. */
  MLT_PROXY_BODY_TOO_LARGE: { status: 413, message: 'request body too large' },
  /** An Ingress fails meshlet's per-object checks (spec §1.2): the Ingress is rejected, the others serve. */
  MLT_PROXY_INGRESS_INVALID: { status: 0, message: 'invalid Ingress' },
  /** A listener cannot open. */
  MLT_PROXY_LISTEN: { status: 0, message: 'listener failed' },
  /** The default certificate could not be generated. */
  MLT_PROXY_CERT: { status: 0, message: 'certificate error' },
} as const

export type ProxyErrorCode = keyof typeof PROXY_ERRORS

export class ProxyError extends MeshletError {
  declare readonly code: ProxyErrorCode
  /** HTTP status to answer downstream (0 when the error does not end a request). */
  readonly status: number
  constructor(code: ProxyErrorCode, message?: string, options?: { cause?: unknown }) {
    super(code, message ?? PROXY_ERRORS[code].message, options)
    this.name = 'ProxyError'
    this.status = PROXY_ERRORS[code].status
  }
}
