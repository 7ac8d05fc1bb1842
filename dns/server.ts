// The DNS listener: UDP and TCP on the same address and port (specs/dns.md §10 "Listeners"). With port 0, UDP binds
// first and TCP takes the port the kernel chose (retried with a new port if TCP cannot have it).
// TCP follows RFC 7766: 2-byte length framing, many queries per connection, pipelined queries answered as they
// complete (possibly out of order), an idle timeout and a bound on connections.

import dgram from 'node:dgram'
import net from 'node:net'
import dns from 'node:dns'
import type { Logger } from 'pino'
import { Query, parseQuery } from './wire.ts'
import type { Resolver } from './answer.ts'
import { DnsError } from './errors.ts'

const TCP_IDLE_MS = 10_000
const MAX_TCP_CONNECTIONS = 1000
/** Queries of one TCP connection being forwarded at once; reading pauses beyond it. */
const MAX_TCP_PIPELINE = 64
const MAX_TCP_BUFFERED = 65535 + 2

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string, family: number) => void

/**
 * dgram `lookup`: an IP literal of the socket's family is itself, at once; anything else through dns.lookup. The
 * check is cheap on purpose (it runs per reply): an IPv4 literal starts and ends with a digit (a host name's last
 * label cannot be all digits), an IPv6 literal holds a ':'.
 */
function literalLookup(address: string, family: unknown, callback: LookupCallback): void {
  const fam = family === 6 || family === 'IPv6' ? 6 : 4
  const first = address.charCodeAt(0)
  const last = address.charCodeAt(address.length - 1)
  const literal = fam === 6 ? address.includes(':') : first >= 48 && first <= 57 && last >= 48 && last <= 57
  if (literal) callback(null, address, fam)
  else dns.lookup(address, fam, callback)
}

export class DnsListener {
  readonly #resolver: Resolver
  readonly #log: Logger
  readonly #udpQuery = new Query()
  readonly #tcpQuery = new Query()
  #udp: dgram.Socket | null = null
  #tcp: net.Server | null = null
  readonly #conns = new Set<net.Socket>()
  address = ''
  port = 0
  udpDrops = 0

  constructor(resolver: Resolver, log: Logger) {
    this.#resolver = resolver
    this.#log = log
  }

  get connections(): number {
    return this.#conns.size
  }

  /**
   * Binds UDP then TCP on the same port. `reusePort`: SO_REUSEPORT on both, so several DNS worker threads share the
   * address and the kernel spreads queries and connections over them.
   */
  async listen(host: string, port: number, reusePort = false): Promise<void> {
    const family = net.isIPv6(host) ? 'udp6' : 'udp4'
    let lastErr: unknown = null
    for (let attempt = 0; attempt < (port === 0 ? 10 : 1); attempt++) {
      // Replies go to rinfo.address, always an IP literal: resolve it synchronously (the default lookup checks it
      // with a regular expression and defers to the next tick on every send). Names keep going through dns.lookup.
      const udp = dgram.createSocket({ type: family, reuseAddr: false, reusePort, lookup: literalLookup })
      try {
        await new Promise<void>((resolve, reject) => {
          udp.once('error', reject)
          udp.bind(port, host, () => (udp.off('error', reject), resolve()))
        })
      } catch (err) {
        udp.close()
        throw new DnsError('MLT_DNS_LISTEN', `dns: cannot bind UDP ${host}:${port}: ${(err as Error).message}`, {
          cause: err,
        })
      }
      const chosen = udp.address().port
      const tcp = net.createServer({ noDelay: true }, (s) => this.#onConnection(s))
      tcp.maxConnections = MAX_TCP_CONNECTIONS
      try {
        await new Promise<void>((resolve, reject) => {
          tcp.once('error', reject)
          tcp.listen({ host, port: chosen, exclusive: true, reusePort }, () => (tcp.off('error', reject), resolve()))
        })
      } catch (err) {
        lastErr = err
        udp.close()
        continue
      }
      udp.on('message', (msg, rinfo) => this.#onDatagram(msg, rinfo))
      udp.on('error', (err) => this.#log.warn({ err }, 'dns udp socket error'))
      this.#udp = udp
      this.#tcp = tcp
      this.address = host
      this.port = chosen
      return
    }
    throw new DnsError('MLT_DNS_LISTEN', `dns: cannot bind TCP ${host}:${port}: ${(lastErr as Error)?.message}`, {
      cause: lastErr,
    })
  }

  #onDatagram(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const udp = this.#udp
    if (udp === null) return
    // In-zone answers without decoding or allocating (dns/fast.ts); everything else below.
    const fast = this.#resolver.fast(msg, udp.getSendQueueCount() > 0)
    if (fast !== null) {
      udp.send(fast, rinfo.port, rinfo.address)
      return
    }
    const q = this.#udpQuery
    parseQuery(msg, msg.length, q)
    let r: Buffer | null | Promise<Buffer | null>
    try {
      r = this.#resolver.resolve(msg, q, false)
    } catch (err) {
      this.#log.error({ err }, 'dns: answering failed')
      return
    }
    if (r === null) return
    if (r instanceof Promise) {
      const { port, address } = rinfo
      r.then(
        (b) => {
          if (b && this.#udp) udp.send(b, port, address)
        },
        (err: unknown) => this.#log.error({ err }, 'dns: answering failed'),
      )
      return
    }
    udp.send(r, rinfo.port, rinfo.address)
  }

  #onConnection(s: net.Socket): void {
    this.#conns.add(s)
    s.setTimeout(TCP_IDLE_MS)
    s.on('timeout', () => s.destroy())
    s.on('error', () => s.destroy())
    s.on('close', () => this.#conns.delete(s))
    let buf: Buffer = Buffer.alloc(0)
    let pending = 0
    s.on('data', (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk])
      if (buf.length > MAX_TCP_BUFFERED + 65535) {
        s.destroy()
        return
      }
      let off = 0
      while (buf.length - off >= 2) {
        const n = buf.readUInt16BE(off)
        if (buf.length - off - 2 < n) break
        const msg = buf.subarray(off + 2, off + 2 + n)
        off += 2 + n
        const q = this.#tcpQuery
        parseQuery(msg, msg.length, q)
        let r: Buffer | null | Promise<Buffer | null>
        try {
          r = this.#resolver.resolve(msg, q, true)
        } catch (err) {
          this.#log.error({ err }, 'dns: answering failed')
          continue
        }
        if (r === null) continue
        if (r instanceof Promise) {
          pending++
          if (pending >= MAX_TCP_PIPELINE) s.pause()
          r.then(
            (b) => {
              if (b && !s.destroyed) s.write(b)
            },
            (err: unknown) => this.#log.error({ err }, 'dns: answering failed'),
          ).finally(() => {
            if (--pending < MAX_TCP_PIPELINE && s.isPaused() && !s.destroyed) s.resume()
          })
        } else s.write(r)
      }
      buf = off === buf.length ? Buffer.alloc(0) : Buffer.from(buf.subarray(off))
    })
  }

  /** Stops accepting; open TCP connections get until `deadline` to finish, then are closed. */
  async close(deadline: number): Promise<void> {
    const udp = this.#udp
    this.#udp = null
    if (udp) await new Promise<void>((resolve) => udp.close(() => resolve()))
    const tcp = this.#tcp
    this.#tcp = null
    if (tcp) {
      const closed = new Promise<void>((resolve) => tcp.close(() => resolve()))
      for (const s of this.#conns) s.end()
      const wait = Math.max(0, Math.min(deadline - Date.now(), 2000))
      const timer = setTimeout(() => {
        for (const s of this.#conns) s.destroy()
      }, wait)
      await closed
      clearTimeout(timer)
    }
  }
}
