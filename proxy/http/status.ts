// Built-in answers: status texts, what each means for the connection and the catalogue, and raw answers on sockets
// that are not (or no longer) an http.ServerResponse. Written once for both engines and the WebSocket path.

import type { Socket } from 'node:net'
import type { ProxyErrorCode } from '../errors.ts'

export const STATUS_TEXT = {
  400: 'Bad Request',
  404: 'Not Found',
  405: 'Method Not Allowed',
  408: 'Request Timeout',
  413: 'Payload Too Large',
  417: 'Expectation Failed',
  308: 'Permanent Redirect',
  426: 'Upgrade Required',
  431: 'Request Header Fields Too Large',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  501: 'Not Implemented',
  504: 'Gateway Timeout',
  505: 'HTTP Version Not Supported',
} as Record<number, string>

/**
 * The catalogue code of a built-in answer given before a route is chosen (access log, /status `unrouted`): what the
 * 400/404/405 of prepare() and the engines' own 400/431/505 mean.
 */
export function unroutedCode(status: number): ProxyErrorCode {
  switch (status) {
    case 404:
      return 'MLT_PROXY_NO_ROUTE'
    case 405:
      return 'MLT_PROXY_METHOD_NOT_ALLOWED'
    case 413:
      return 'MLT_PROXY_BODY_TOO_LARGE'
    default:
      // 400, 431, 501, 505: the request itself cannot be read or framed.
      return 'MLT_PROXY_BAD_REQUEST'
  }
}

/** Built-in answers after which the connection cannot be trusted to be in step (framing or version refused). */
export function closesConnection(status: number): boolean {
  return status === 400 || status === 501 || status === 505
}

/** The body of a built-in answer (plain text). */
export function replyBody(status: number): string {
  return `${status} ${STATUS_TEXT[status] ?? ''}\n`
}

/** Socket error codes that mean nothing reached the endpoint (a connect failure: retried, counted as such). */
export function isConnectFailure(code: string | undefined): boolean {
  return (
    code === 'ECONNREFUSED' ||
    code === 'UND_ERR_CONNECT_TIMEOUT' ||
    code === 'EHOSTUNREACH' ||
    code === 'ENETUNREACH' ||
    code === 'EADDRNOTAVAIL' ||
    code === 'ENOTFOUND' ||
    code === 'EAI_AGAIN' ||
    // the endpoint's pool was retired between the pick and the dispatch: nothing was sent
    code === 'UND_ERR_CLOSED' ||
    code === 'UND_ERR_DESTROYED'
  )
}

/** A raw HTTP/1.1 answer on a socket that is not (or no longer) an http.ServerResponse. */
export function writeRawStatus(socket: Socket, status: number, extra = ''): void {
  if (socket.destroyed) return
  const body = `${status} ${STATUS_TEXT[status] ?? ''}\n`
  socket.write(
    `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? ''}\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\n${extra}\r\n${body}`,
  )
  lingerClose(socket)
}

/** How long a closing client connection may stay half-open after meshlet's FIN. */
const LINGER_MS = 5000

/**
 * Ends a client connection meshlet will read nothing more from: FIN now (an immediate close with unread input would
 * send a reset that can destroy the answer before the client reads it), what the client still sends is discarded,
 * and the socket is destroyed at the client's FIN or after LINGER_MS, so a client that never closes holds no
 * descriptor (the http listener allows half-open connections).
 */
export function lingerClose(socket: Socket): void {
  socket.end()
  socket.resume()
  const timer = setTimeout(() => socket.destroy(), LINGER_MS)
  timer.unref()
  socket.once('close', () => clearTimeout(timer))
  socket.once('end', () => socket.destroy())
}
