// The proxy's error catalogue (STYLE.md "Errors"), code → { status, what happened, what to do }: one code per failure, with the HTTP status answered downstream
// when the failure ends a request. Callers branch on `code`, never on message text.

import { defineCatalogue, MeshletError } from '../model/errors.ts'

export const PROXY_ERRORS = defineCatalogue({
  /** The request-target or Host cannot be normalised (spec §1.4): answered 400. */
  MLT_PROXY_BAD_REQUEST: {
    status: 400,
    message: 'bad request',
    fix: "the client sent a malformed request-target or Host header; fix the client (the request is refused, nothing on meshlet's side to change)",
  },
  /** TRACE and CONNECT are refused, as nginx does. */
  MLT_PROXY_METHOD_NOT_ALLOWED: {
    status: 405,
    message: 'method not allowed',
    fix: 'TRACE and CONNECT are refused by design; use another method',
  },
  /** No vhost, no path and no default backend. */
  MLT_PROXY_NO_ROUTE: {
    status: 404,
    message: 'no route',
    fix: "add an Ingress rule for the request's host and path (or a defaultBackend), with ingressClassName matching --ingress-class",
  },
  /** The route's Service, port or ready endpoints are missing. */
  MLT_PROXY_NO_ENDPOINTS: {
    status: 503,
    message: 'no ready endpoints',
    fix: 'check the backend Service exists with the port the Ingress names, and that its Pods are ready (/status lists its endpoints)',
  },
  /** Connect refused or reset, or the upstream closed before a full response head. */
  MLT_PROXY_UPSTREAM_ERROR: {
    status: 502,
    message: 'upstream error',
    fix: "check the backend Pod listens on the Service's targetPort and stays up while answering (its logs); meshlet retries per proxy-next-upstream",
  },
  /** The upstream's response does not parse as HTTP/1.1 (a bad status line, header or chunk): answered 502. */
  MLT_PROXY_BAD_RESPONSE: {
    status: 502,
    message: 'upstream response does not parse',
    fix: "the backend answered with something that is not HTTP/1.1 (TLS, HTTP/2 only, or a broken header); serve plain HTTP/1.1 on the Service's targetPort, or fix the backend",
  },
  /** Connect timeout or read timeout before the response head. */
  MLT_PROXY_UPSTREAM_TIMEOUT: {
    status: 504,
    message: 'upstream timeout',
    fix: 'the backend was too slow: find why in its logs, or raise the proxy-connect-timeout / proxy-read-timeout annotation on the Ingress',
  },
  /** Request body over proxy-body-size. */
  MLT_PROXY_BODY_TOO_LARGE: {
    status: 413,
    message: 'request body too large',
    fix: 'raise the proxy-body-size annotation on the Ingress (e.g. 10m, 0 = no limit), or send a smaller body',
  },
  /** An Ingress fails meshlet's per-object checks (spec §1.2): the Ingress is rejected, the others serve. */
  MLT_PROXY_INGRESS_INVALID: {
    status: 0,
    message: 'invalid Ingress',
    fix: 'fix the Ingress field the message names (path regex, annotation value, TLS secretName); `meshlet check -f` shows every problem at once',
  },
  /** A listener cannot open. */
  MLT_PROXY_LISTEN: {
    status: 0,
    message: 'listener failed',
    fix: 'another process holds the port, or ports below 1024 need root or CAP_NET_BIND_SERVICE; pick another address with --http / --https ADDR:PORT, or off',
  },
  /** The default certificate could not be generated. */
  MLT_PROXY_CERT: {
    status: 0,
    message: 'certificate error',
    fix: 'install openssl (the default certificate for hosts without a TLS Secret is generated with it: openssl version must work for the user meshlet runs as)',
  },
})

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
