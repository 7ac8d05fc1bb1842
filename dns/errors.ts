// The DNS plane's error catalogue. Protocol errors carry the rcode they are answered with (STYLE.md §8 "Errors").

import { MeshletError } from '../model/errors.ts'

export type DnsErrorCode =
  /** The listener could not bind its UDP or TCP socket. */
  | 'MLT_DNS_LISTEN'
  /** An --upstream value is not "host[:port]". */
  | 'MLT_DNS_UPSTREAM_INVALID'
  /** An upstream is meshlet's own listener, or sent meshlet's loop probe back: it is refused. */
  | 'MLT_DNS_UPSTREAM_LOOP'
  /** No upstream answered in time, or every upstream is refused. */
  | 'MLT_DNS_UPSTREAM_FAILED'

export class DnsError extends MeshletError {
  declare readonly code: DnsErrorCode
  constructor(code: DnsErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options)
    this.name = 'DnsError'
  }
}
