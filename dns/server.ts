// The DNS listener: UDP and TCP on the same address and port (specs/dns.md §10 "Listeners"). With port 0, UDP binds
// first and TCP takes the port the kernel chose (retried with a new port if TCP cannot have it).
// TCP follows RFC 7766: 2-byte length framing, many queries per connection, pipelined queries answered as they
// complete (possibly out of order), an idle timeout and a bound on connections.
//
// Slow clients (RFC 7766 §6.2.3, issue 13 item 8): a message must arrive whole within TCP_MESSAGE_MS of its first
// byte (a byte now and then no longer keeps a connection alive), connections are capped per client address and in
// total, and when a cap is hit the oldest idle connection (no query being answered) is closed to make room instead
// of refusing the newcomer. One sweep a second enforces both timeouts; the per-chunk cost is a Date.now().

import dgram from 'node:dgram'
import net from 'node:net'
import type { Logger } from 'pino'
import { Query, parseQuery } from './wire.ts'
import type { Resolver } from './answer.ts'
import { DnsError } from './errors.ts'
import { literalLookup } from './lookup.ts'

const TCP_IDLE_MS = 10_000
/** From a message's first byte to its last (miekg/dns reads a message within 2 s). */
const TCP_MESSAGE_MS = 3_000
const TCP_SWEEP_MS = 1_000
const MAX_TCP_CONNECTIONS = 1000
/** Per client address (one host, or everything behind one NAT); beyond it that client's oldest idle one is closed. */
const MAX_TCP_PER_CLIENT = 100
/** Queries of one TCP connection being forwarded at once; reading pauses beyond it. */
const MAX_TCP_PIPELINE = 64
const MAX_TCP_BUFFERED = 65535 + 2

/** One TCP connection's state, read by the sweep and by eviction. */
interface TcpConnection {
  readonly socket: net.Socket
  readonly client: string
  /** When the message being received started (Date.now()); 0 when no partial message is buffered. */
  partialSince: number
  /** Last read or write: the idle timeout counts from here. */
  lastActive: number
  /** Last complete query received (or the connect): eviction closes the idle connection where this is oldest. */
  lastQuery: number
  /** Queries of this connection being forwarded. */
  pending: number
}

export class DnsListener {
  readonly #resolver: Resolver
  readonly #log: Logger
  readonly #udpQuery = new Query()
  readonly #tcpQuery = new Query()
  #udp: dgram.Socket | null = null
  #tcp: net.Server | null = null
  /** Insertion order is connection order. */
  readonly #conns = new Set<TcpConnection>()
  readonly #perClient = new Map<string, number>()
  #sweep: NodeJS.Timeout | null = null
  #lastSweep = 0
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
      // No server.maxConnections: it refuses newcomers, and #admit closes the oldest idle connection instead.
      const tcp = net.createServer({ noDelay: true }, (s) => this.#onConnection(s))
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
      this.#lastSweep = Date.now()
      this.#sweep = setInterval(() => this.#sweepConnections(Date.now()), TCP_SWEEP_MS)
      this.#sweep.unref()
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
    // In-zone answers and cached forwards without decoding or allocating (dns/fast.ts, dns/fast-cache.ts); everything
    // else below.
    const fast = this.#resolver.fast(msg, udp.getSendQueueCount() > 0, rinfo.address)
    if (fast !== null) {
      udp.send(fast, rinfo.port, rinfo.address)
      return
    }
    const q = this.#udpQuery
    parseQuery(msg, msg.length, q)
    let r: Buffer | null | Promise<Buffer | null>
    try {
      r = this.#resolver.resolve(msg, q, false, rinfo.address)
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

  /**
   * Makes room for a connection from `client`: under both caps, nothing to do; at a cap, the oldest idle connection
   * (of that client for its cap, of anyone for the total) is closed. False when every candidate is busy.
   */
  #admit(client: string): boolean {
    const mine = this.#perClient.get(client) ?? 0
    if (mine >= MAX_TCP_PER_CLIENT) return this.#evictOldestIdle(client)
    if (this.#conns.size >= MAX_TCP_CONNECTIONS) return this.#evictOldestIdle(null)
    return true
  }

  #evictOldestIdle(client: string | null): boolean {
    let oldest: TcpConnection | null = null
    for (const c of this.#conns) {
      if (c.pending > 0 || (client !== null && c.client !== client)) continue
      if (oldest === null || c.lastQuery < oldest.lastQuery) oldest = c
    }
    if (oldest === null) return false
    this.#forget(oldest)
    oldest.socket.destroy()
    return true
  }

  #forget(c: TcpConnection): void {
    if (!this.#conns.delete(c)) return
    const n = (this.#perClient.get(c.client) ?? 1) - 1
    if (n <= 0) this.#perClient.delete(c.client)
    else this.#perClient.set(c.client, n)
  }

  /**
   * Closes connections whose message is overdue, and idle ones past the idle timeout. After a stall of the event
   * loop (the sweep itself is late) it waits a round: bytes that arrived meanwhile are still unread in the kernel,
   * and timers run before I/O is polled.
   */
  #sweepConnections(now: number): void {
    const late = now - this.#lastSweep > 2 * TCP_SWEEP_MS
    this.#lastSweep = now
    if (late) return
    for (const c of this.#conns) {
      const overdue = c.partialSince !== 0 && now - c.partialSince > TCP_MESSAGE_MS
      const idle = c.pending === 0 && now - c.lastActive > TCP_IDLE_MS
      if (overdue || idle) {
        this.#forget(c)
        c.socket.destroy()
      }
    }
  }

  #onConnection(s: net.Socket): void {
    const client = s.remoteAddress ?? ''
    if (!this.#admit(client)) {
      s.destroy()
      return
    }
    const now = Date.now()
    const c: TcpConnection = { socket: s, client, partialSince: 0, lastActive: now, lastQuery: now, pending: 0 }
    this.#conns.add(c)
    this.#perClient.set(client, (this.#perClient.get(client) ?? 0) + 1)
    s.on('error', () => s.destroy())
    s.on('close', () => this.#forget(c))
    // Reading pauses while many queries are being forwarded or the client does not read its answers; it resumes
    // when both have room (a client that never reads then goes idle and is closed).
    const resumeIfRoom = () => {
      if (s.isPaused() && !s.destroyed && c.pending < MAX_TCP_PIPELINE && s.writableLength <= MAX_TCP_BUFFERED)
        s.resume()
    }
    s.on('drain', resumeIfRoom)
    let buf: Buffer = Buffer.alloc(0)
    s.on('data', (chunk: Buffer) => {
      const at = Date.now()
      c.lastActive = at
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
        c.lastQuery = at
        const q = this.#tcpQuery
        parseQuery(msg, msg.length, q)
        let r: Buffer | null | Promise<Buffer | null>
        try {
          r = this.#resolver.resolve(msg, q, true, client)
        } catch (err) {
          this.#log.error({ err }, 'dns: answering failed')
          continue
        }
        if (r === null) continue
        if (r instanceof Promise) {
          c.pending++
          r.then(
            (b) => {
              if (b && !s.destroyed) {
                c.lastActive = Date.now()
                s.write(b)
              }
            },
            (err: unknown) => this.#log.error({ err }, 'dns: answering failed'),
          ).finally(() => {
            c.pending--
            resumeIfRoom()
          })
        } else s.write(r)
      }
      if (c.pending >= MAX_TCP_PIPELINE || s.writableLength > MAX_TCP_BUFFERED) s.pause()
      buf = off === buf.length ? Buffer.alloc(0) : Buffer.from(buf.subarray(off))
      // The deadline runs from the first byte of a message to its last; a whole message resets it.
      if (buf.length === 0) c.partialSince = 0
      else if (off > 0 || c.partialSince === 0) c.partialSince = at
    })
  }

  /** Stops accepting; open TCP connections get until `deadline` to finish, then are closed. */
  async close(deadline: number): Promise<void> {
    const udp = this.#udp
    this.#udp = null
    if (this.#sweep) clearInterval(this.#sweep)
    this.#sweep = null
    if (udp) await new Promise<void>((resolve) => udp.close(() => resolve()))
    const tcp = this.#tcp
    this.#tcp = null
    if (tcp) {
      const closed = new Promise<void>((resolve) => tcp.close(() => resolve()))
      for (const c of this.#conns) c.socket.end()
      const wait = Math.max(0, Math.min(deadline - Date.now(), 2000))
      const timer = setTimeout(() => {
        for (const c of this.#conns) c.socket.destroy()
      }, wait)
      await closed
      clearTimeout(timer)
    }
  }
}
