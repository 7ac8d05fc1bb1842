// The DNS plane's error catalogue (STYLE.md §8 "Errors"), in the shape of the others: code → { what happened, what to do }. Protocol
// errors carry the rcode they are answered with; /status (`upstreams[].code`) and the log lines carry the code.

import { catalogueError, defineCatalogue } from '../model/errors.ts'

export const DNS_ERRORS = defineCatalogue({
  /** The listener could not bind its UDP or TCP socket. */
  MLT_DNS_LISTEN: {
    message: 'listener could not bind',
    fix: 'another process holds the port (often systemd-resolved or dnsmasq on :53: ss -lunp | grep :53), or port 53 needs root or CAP_NET_BIND_SERVICE; pick another address with --dns ADDR:PORT, or --dns off',
  },
  /** An --upstream value is not "host[:port]". */
  MLT_DNS_UPSTREAM_INVALID: {
    message: 'invalid upstream',
    fix: 'write each --upstream as an IP address with an optional port (1.1.1.1, 1.1.1.1:53, [2606:4700::1111]:53); names are not accepted',
  },
  /** An upstream is meshlet's own listener, or sent meshlet's loop probe back: it is refused. */
  MLT_DNS_UPSTREAM_LOOP: {
    message: 'forwarding loop: upstream refused',
    fix: 'point --upstream at a resolver other than meshlet itself (not its own --dns address, nor a resolver that forwards back to it); without --upstream, /etc/resolv.conf must not name meshlet',
  },
  /** An upstream stopped answering (3 attempts in a row timed out); names it alone serves get SERVFAIL. */
  MLT_DNS_UPSTREAM_FAILED: {
    message: 'upstream not answering',
    fix: 'check that the upstream named in the message answers (dig @ADDR example.com) and that this host can reach it; give a working one with --upstream',
  },
})

export class DnsError extends catalogueError('DnsError', DNS_ERRORS) {}
