// The DNS plane's error catalogue (STYLE.md §8 "Errors"), in the shape of the others: code → what happened. Protocol
// errors carry the rcode they are answered with; /status (`upstreams[].code`) and the log lines carry the code.

import { MeshletError } from '../model/errors.ts'

export const DNS_ERRORS = {
  /** The listener could not bind its UDP or TCP socket. */
  MLT_DNS_LISTEN: 'listener could not bind',
  /** An --upstream value is not "host[:port]". */
  MLT_DNS_UPSTREAM_INVALID: 'invalid upstream',
  /** An upstream is meshlet's own listener, or sent meshlet's loop probe back: it is refused. */
  MLT_DNS_UPSTREAM_LOOP: 'forwarding loop: upstream refused',
  /** An upstream stopped answering (3 attempts in a row timed out); names it alone serves get SERVFAIL. */
  MLT_DNS_UPSTREAM_FAILED: 'upstream not answering',
} as const

export type DnsErrorCode = keyof typeof DNS_ERRORS

export class DnsError extends MeshletError {
  declare readonly code: DnsErrorCode
  constructor(code: DnsErrorCode, message?: string, options?: { cause?: unknown }) {
    super(code, message ?? DNS_ERRORS[code], options)
    this.name = 'DnsError'
  }
}
