// The forwarder: names outside the zone (and reverse names meshlet does not own) go to the upstreams over UDP, with a
// TCP retry when the reply is truncated, a per-attempt timeout, failover to the next upstream and SERVFAIL within
// 3 s (specs/dns.md §10 "Forwarding"). Replies are cached per RFC 2308 (dns/cache.ts); identical in-flight queries
// share one upstream query. Upstreams that are meshlet itself, or that send meshlet's loop probe back, are refused.
//
// Spoofing (RFC 5452): every UDP attempt has a socket of its own on the upstream's family, connected to the upstream:
// the kernel binds it to a random ephemeral port on the route's source address (127.0.0.1 for a loopback upstream)
// and drops datagrams from any other address or port. A reply is accepted only from the upstream's address and
// port, with the query's random ID and the same question. An off-path guess needs the port (~28k) times the ID
// (65536), about 2^31 tries per query, instead of 2^16 against four long-lived sockets.

import dgram from 'node:dgram'
import net from 'node:net'
import { randomBytes, randomInt } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { networkInterfaces } from 'node:os'
import type { Logger } from 'pino'
import type { Counter, Histogram } from 'prom-client'
import { ReplyCache, type CacheEntry } from './cache.ts'
import { scanMessage } from './message.ts'
import { DnsError } from './errors.ts'
import { TYPE, nameKey } from './wire.ts'
import { canonicalIp } from '../model/ip.ts'
import { literalLookup } from './lookup.ts'

/** Per attempt; the next upstream (or the same one again) is tried after it. */
const ATTEMPT_MS = 1400
/** Overall: the client gets SERVFAIL before this, well before glibc's 5 s timeout. */
const DEADLINE_MS = 2800
/** Cap on concurrent upstream queries (CoreDNS forward max_concurrent); beyond it the client gets SERVFAIL. */
const MAX_INFLIGHT = 1000
/** Consecutive failures after which an upstream is tried last. */
const FAILING_AFTER = 3

export type UpstreamState = 'ok' | 'failing' | 'loop' | 'self'

export interface Upstream {
  readonly host: string
  readonly port: number
  /** Canonical text of the address, compared with a reply's source when it is not byte-equal to `host`. */
  readonly canonical: string
  readonly family: 'udp4' | 'udp6'
  readonly text: string
  state: UpstreamState
  failures: number
  consecutiveFailures: number
  /** Why it is refused (loop or self), null otherwise. */
  reason: string | null
}

export interface ForwarderMetrics {
  readonly cacheHits: Counter
  readonly cacheMisses: Counter
  readonly upstreamLatency: Histogram<'upstream'>
  readonly upstreamFailures: Counter<'upstream' | 'reason'>
}

/** Parses "host", "host:port", "[v6]:port" or a bare IPv6 address (port 53). */
export function parseUpstream(text: string): { host: string; port: number } {
  const bad = () =>
    new DnsError('MLT_DNS_UPSTREAM_INVALID', `upstream "${text}": expected ADDR[:PORT] with an IP address`)
  let host = text
  let port = 53
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(text)
  if (m) {
    host = m[1]!
    if (m[2]) port = Number(m[2])
  } else if (net.isIPv4(text.split(':')[0] ?? '') && text.includes(':')) {
    const i = text.lastIndexOf(':')
    host = text.slice(0, i)
    port = Number(text.slice(i + 1))
  }
  if (!net.isIP(host) || !Number.isInteger(port) || port < 1 || port > 65535) throw bad()
  return { host, port }
}

/** Nameservers of a resolv.conf (text), port 53. */
export function resolvConfNameservers(text: string): string[] {
  const out: string[] = []
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line)
    if (m && net.isIP(m[1]!.replace(/%.*$/, ''))) out.push(m[1]!.replace(/%.*$/, ''))
  }
  return out
}

export function defaultUpstreams(path = '/etc/resolv.conf'): string[] {
  try {
    return resolvConfNameservers(readFileSync(path, 'utf8'))
  } catch {
    return []
  }
}

/** The question sections match when there is exactly one and it is equal ignoring ASCII case. */
function sameQuestion(reply: Buffer, question: Buffer): boolean {
  if (reply.length < 12 + question.length || reply[4] !== 0 || reply[5] !== 1) return false
  for (let i = 0; i < question.length; i++) {
    let a = reply[12 + i]!
    let b = question[i]!
    if (a >= 0x41 && a <= 0x5a) a += 32
    if (b >= 0x41 && b <= 0x5a) b += 32
    if (a !== b) return false
  }
  return true
}

/** A reply to query `id` from the upstream itself (RFC 5452 §9.1: address, port, ID, question). */
function acceptable(msg: Buffer, from: dgram.RemoteInfo, u: Upstream, id: number, question: Buffer): boolean {
  if (from.port !== u.port) return false
  if (from.address !== u.host && canonicalIp(from.address) !== u.canonical) return false
  // QR=1 and opcode QUERY.
  if (msg.length < 12 || (msg[2]! & 0xf8) !== 0x80 || msg.readUInt16BE(0) !== id) return false
  return sameQuestion(msg, question)
}

function isLocalAddress(host: string): boolean {
  if (host.startsWith('127.') || host === '::1' || host === '0.0.0.0' || host === '::') return true
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) if (a.address === host) return true
  return false
}

export class Forwarder {
  readonly upstreams: Upstream[]
  readonly cache = new ReplyCache(10000)
  readonly #log: Logger
  readonly #metrics: ForwarderMetrics
  readonly #inflight = new Map<string, Promise<CacheEntry | null>>()
  /** Ends every UDP attempt still waiting (close()). */
  readonly #attempts = new Set<(reply: Buffer | null) => void>()
  readonly #probes = new Map<string, Upstream>()
  #closed = false

  constructor(
    upstreams: readonly string[],
    self: { host: string; port: number },
    log: Logger,
    metrics: ForwarderMetrics,
  ) {
    this.#log = log
    this.#metrics = metrics
    this.upstreams = upstreams.map((text) => {
      const { host, port } = parseUpstream(text)
      const u: Upstream = {
        host,
        port,
        canonical: canonicalIp(host) ?? host,
        family: net.isIPv4(host) ? 'udp4' : 'udp6',
        text: net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`,
        state: 'ok',
        failures: 0,
        consecutiveFailures: 0,
        reason: null,
      }
      const sameHost = host === self.host || (isLocalAddress(host) && (self.host === '0.0.0.0' || self.host === '::'))
      if (port === self.port && sameHost) {
        u.state = 'self'
        u.reason = `upstream ${u.text} is meshlet's own DNS listener`
        log.error(
          { upstream: u.text, code: 'MLT_DNS_UPSTREAM_LOOP' },
          'upstream refused: it is this listener (forwarding loop)',
        )
      }
      return u
    })
  }

  /** Sends the loop probes (CoreDNS loop plugin: a random name, type HINFO). */
  start(): Promise<void> {
    for (const u of this.upstreams) {
      if (u.state !== 'ok') continue
      const name = `${randomBytes(6).toString('hex')}.${randomBytes(6).toString('hex')}`
      const key = nameKey(name)
      this.#probes.set(key, u)
      const question = Buffer.concat([Buffer.from(key, 'latin1'), Buffer.from([0, TYPE.HINFO, 0, 1])])
      // The answer does not matter (NXDOMAIN is normal); only whether the probe comes back to meshlet.
      void this.#udp(u, question, false, false).then(() => {
        // Give a looping upstream time to send it back, then forget the name.
        setTimeout(() => this.#probes.delete(key), 5000).unref()
      })
    }
    return Promise.resolve()
  }

  /**
   * Called by the resolver for every query it would forward: true when it is one of our loop probes coming back,
   * in which case the upstream that sent it is refused from now on.
   */
  isLoopProbe(key: string): boolean {
    if (this.#probes.size === 0) return false
    const u = this.#probes.get(key)
    if (!u) return false
    this.#probes.delete(key)
    if (u.state !== 'loop') {
      u.state = 'loop'
      u.reason = `upstream ${u.text} sent meshlet's loop probe back to meshlet`
      this.#log.error({ upstream: u.text, code: 'MLT_DNS_UPSTREAM_LOOP' }, 'forwarding loop detected: upstream refused')
    }
    return true
  }

  get usable(): number {
    return this.upstreams.filter((u) => u.state === 'ok' || u.state === 'failing').length
  }

  /**
   * The upstream reply for a question (name + type + class, wire form, any case), from the cache or the upstreams;
   * null when every upstream failed (the caller answers SERVFAIL).
   */
  resolve(question: Buffer, key: string, dnssecOk: boolean, cd: boolean): Promise<CacheEntry | null> | CacheEntry {
    const cached = this.cache.get(key)
    if (cached) {
      this.#metrics.cacheHits.inc()
      return cached
    }
    this.#metrics.cacheMisses.inc()
    const running = this.#inflight.get(key)
    if (running) return running
    if (this.#inflight.size >= MAX_INFLIGHT) return Promise.resolve(null)
    const p = this.#query(question, dnssecOk, cd).then((reply) => {
      this.#inflight.delete(key)
      if (!reply) return null
      const scan = scanMessage(reply)
      if (!scan) return null
      const entry: CacheEntry = { buf: reply, scan, storedAt: performance.now(), expires: 0 }
      this.cache.put(key, entry)
      return entry
    })
    this.#inflight.set(key, p)
    return p
  }

  async #query(question: Buffer, dnssecOk: boolean, cd: boolean): Promise<Buffer | null> {
    const deadline = Date.now() + DEADLINE_MS
    const order = this.upstreams
      .filter((u) => u.state === 'ok')
      .concat(this.upstreams.filter((u) => u.state === 'failing'))
    if (order.length === 0) return null
    for (let attempt = 0; Date.now() < deadline - 50; attempt++) {
      if (this.#closed) return null
      const u = order[attempt % order.length]!
      if (u.state === 'loop' || u.state === 'self') continue
      const started = process.hrtime.bigint()
      let reply = await this.#udp(u, question, dnssecOk, cd, Math.min(ATTEMPT_MS, deadline - Date.now()))
      if (reply && (reply[2]! & 0x02) !== 0) {
        const tcp = await this.#tcp(u, question, dnssecOk, cd, Math.min(ATTEMPT_MS, deadline - Date.now()))
        if (tcp) reply = tcp
      }
      if (reply) {
        this.#metrics.upstreamLatency.observe({ upstream: u.text }, Number(process.hrtime.bigint() - started) / 1e9)
        if (u.state === 'failing') {
          u.state = 'ok'
          this.#log.info({ upstream: u.text }, 'upstream answering again')
        }
        u.consecutiveFailures = 0
        return reply
      }
      u.failures++
      u.consecutiveFailures++
      this.#metrics.upstreamFailures.inc({ upstream: u.text, reason: 'timeout' })
      if (u.state === 'ok' && u.consecutiveFailures >= FAILING_AFTER) {
        u.state = 'failing'
        this.#log.warn({ upstream: u.text, code: 'MLT_DNS_UPSTREAM_FAILED' }, 'upstream not answering')
      }
    }
    return null
  }

  #message(id: number, question: Buffer, dnssecOk: boolean, cd: boolean): Buffer {
    const msg = Buffer.alloc(12 + question.length + 11)
    msg.writeUInt16BE(id, 0)
    msg[2] = 0x01 // RD
    msg[3] = cd ? 0x10 : 0
    msg.writeUInt16BE(1, 4)
    msg.writeUInt16BE(1, 10)
    question.copy(msg, 12)
    const p = 12 + question.length
    msg[p] = 0
    msg.writeUInt16BE(TYPE.OPT, p + 1)
    msg.writeUInt16BE(1232, p + 3)
    msg[p + 7] = dnssecOk ? 0x80 : 0
    return msg
  }

  /**
   * One UDP attempt on a socket of its own: a fresh random source port, connected to the upstream so the kernel
   * drops anything from elsewhere, and `acceptable` checked again on what arrives. ICMP errors (a closed port) are
   * ignored: the attempt times out as with a silent upstream, so a refusing upstream is not retried in a tight loop.
   */
  #udp(u: Upstream, question: Buffer, dnssecOk: boolean, cd: boolean, timeoutMs = ATTEMPT_MS): Promise<Buffer | null> {
    if (timeoutMs <= 0 || this.#closed) return Promise.resolve(null)
    const id = randomInt(65536)
    const msg = this.#message(id, question, dnssecOk, cd)
    // The address is an IP literal: resolved in place, not through dns.lookup (a tick and a callback each).
    const socket = dgram.createSocket({ type: u.family, lookup: literalLookup })
    return new Promise<Buffer | null>((resolve) => {
      let settled = false
      const finish = (reply: Buffer | null) => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        this.#attempts.delete(finish)
        try {
          socket.close()
        } catch {
          // a socket whose bind failed may be closed already: nothing left to release
        }
        resolve(reply)
      }
      const timer = setTimeout(() => finish(null), timeoutMs)
      this.#attempts.add(finish)
      // ICMP errors and a failed connect: nothing to do but let the attempt time out (see above).
      socket.on('error', () => {})
      socket.on('message', (reply, from) => {
        if (acceptable(reply, from, u, id, question)) finish(reply)
      })
      // connect() binds first (port 0: the kernel picks a random free port). A failed connect is reported on
      // 'error' (ignored above), yet Node still calls this callback (seen with Node 24 when the upstream has no route,
      // e.g. in a namespace whose loopback is down): send() on the unconnected socket then throws
      // ERR_SOCKET_BAD_PORT synchronously, which would crash the process. That attempt simply fails.
      socket.connect(u.port, u.host, () => {
        if (settled) return
        try {
          socket.send(msg, (err) => {
            if (err) finish(null)
          })
        } catch {
          finish(null)
        }
      })
    })
  }

  #tcp(u: Upstream, question: Buffer, dnssecOk: boolean, cd: boolean, timeoutMs: number): Promise<Buffer | null> {
    if (timeoutMs <= 0) return Promise.resolve(null)
    return new Promise<Buffer | null>((resolve) => {
      const id = randomInt(65536)
      const msg = this.#message(id, question, dnssecOk, cd)
      const socket = net.connect({ host: u.host, port: u.port })
      let buf = Buffer.alloc(0)
      let settled = false
      const done = (r: Buffer | null) => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        socket.destroy()
        resolve(r)
      }
      const timer = setTimeout(() => done(null), timeoutMs)
      socket.on('error', () => done(null))
      socket.on('close', () => done(null))
      socket.on('connect', () => {
        const len = Buffer.alloc(2)
        len.writeUInt16BE(msg.length)
        socket.write(Buffer.concat([len, msg]))
      })
      socket.on('data', (chunk: Buffer) => {
        buf = Buffer.concat([buf, chunk])
        if (buf.length < 2) return
        const n = buf.readUInt16BE(0)
        if (buf.length < 2 + n) return
        const reply = buf.subarray(2, 2 + n)
        if (
          reply.length >= 12 &&
          (reply[2]! & 0xf8) === 0x80 &&
          reply.readUInt16BE(0) === id &&
          sameQuestion(reply, question)
        )
          done(Buffer.from(reply))
        else done(null)
      })
    })
  }

  close(): void {
    this.#closed = true
    for (const finish of [...this.#attempts]) finish(null)
  }
}
