// One DNS worker thread (--dns-workers N ≥ 2): its own UDP and TCP sockets on the shared address (SO_REUSEPORT),
// its own zone index kept from the changes the main thread posts (dns/zone-delta.ts), and the fast path. Forwarded names and
// ExternalName chases are handed to the main thread with the whole query (it owns the forwarder, its cache, the loop
// probe and the upstream metrics) and the reply comes back to be sent from this worker's socket.
//
// Cached forwards are answered here too: the main thread broadcasts every store into (and removal from) its cache to
// this worker's fast-path mirror (dns/fast-cache.ts).
//
// Messages, main → worker: {type: 'zone', data (a serialized delta)} | {type: 'reply', id, buf} | {type: 'close', deadline} |
// {type: 'cache', key, buf, age, left (ms)} | {type: 'uncache', key (null: all)}.
// Worker → main: {type: 'listening', port} | {type: 'failed', message} | {type: 'applied', version, error} |
// {type: 'query', id, msg, tcp, client} | {type: 'log', line} | {type: 'touched', keys} | {type: 'closed'}.

import { parentPort, workerData } from 'node:worker_threads'
import { pino } from 'pino'
import { Resolver } from './answer.ts'
import { DnsListener } from './server.ts'
import { buildZone, type ZoneOptions } from './zone.ts'
import { DeltaReceiver } from './zone-delta.ts'
import { EMPTY_SNAPSHOT } from './empty.ts'
import { RecursionAcl } from './recursion-acl.ts'
import { parseCidr } from '../model/ip.ts'

export interface WorkerInit {
  readonly host: string
  /** 0 for the first worker (the kernel chooses; the others then bind that port). */
  readonly port: number
  readonly zoneOptions: ZoneOptions
  /** Float64Array(COUNTERS) over it: this worker's (qtype, rcode) counters, read by the main thread's collector. */
  readonly counts: SharedArrayBuffer
  /** Int32Array over it: [0] open TCP connections. */
  readonly stats: SharedArrayBuffer
  /** Float64Array(1) over it: cached forwards answered on this worker's fast path. */
  readonly cacheHits: SharedArrayBuffer
  readonly logLevel: string
  /** --allow-recursion CIDRs (text): the worker refuses forwarded names to other clients itself. */
  readonly allowRecursion: readonly string[]
}

type FromMain =
  | { readonly type: 'zone'; readonly data: Uint8Array }
  | { readonly type: 'reply'; readonly id: number; readonly buf: Uint8Array | null }
  | { readonly type: 'close'; readonly deadline: number }
  | {
      readonly type: 'cache'
      readonly key: string
      readonly buf: Uint8Array
      /** ms since the main thread stored it, and until it expires. */
      readonly age: number
      readonly left: number
    }
  | { readonly type: 'uncache'; readonly key: string | null }

const TOUCH_REPORT_MS = 1000

const port = parentPort!
const init = workerData as WorkerInit
// Log lines go to the main thread, which writes them through the plane's logger.
const log = pino({ level: init.logLevel }, { write: (line: string) => port.postMessage({ type: 'log', line }) })
const counts = new Float64Array(init.counts)
const stats = new Int32Array(init.stats)
const resolver = new Resolver(buildZone(EMPTY_SNAPSHOT, init.zoneOptions, 0), {
  counts,
  cacheHits: new Float64Array(init.cacheHits),
})
resolver.acl = new RecursionAcl(init.allowRecursion.map((c) => parseCidr(c)!))
const deltas = new DeltaReceiver(init.zoneOptions)
const pending = new Map<number, (b: Buffer | null) => void>()
let nextId = 1
let closing = false

resolver.delegate = (msg: Buffer, tcp: boolean, client: string): Promise<Buffer | null> => {
  if (closing) return Promise.resolve(null)
  const id = nextId++
  if (nextId > 0x7fffffff) nextId = 1
  // A copy of exactly the query: a Buffer view would clone its whole pool.
  const copy = new Uint8Array(msg)
  port.postMessage({ type: 'query', id, msg: copy, tcp, client }, [copy.buffer])
  return new Promise((resolve) => pending.set(id, resolve))
}

const listener = new DnsListener(resolver, log)
try {
  await listener.listen(init.host, init.port, true)
} catch (err) {
  port.postMessage({ type: 'failed', message: (err as Error).message })
  process.exit(1)
}
const tcpCount = setInterval(() => Atomics.store(stats, 0, listener.connections), 200)
tcpCount.unref()
// Cache hits answered here, reported once a second so they count for the forwarder cache's LRU order.
const touched = setInterval(() => {
  const keys = resolver.cache?.takeTouched() ?? []
  if (keys.length > 0) port.postMessage({ type: 'touched', keys })
}, TOUCH_REPORT_MS)
touched.unref()
port.postMessage({ type: 'listening', port: listener.port })

port.on('message', (m: FromMain) => {
  switch (m.type) {
    case 'zone': {
      try {
        const { zone, changed, version } = deltas.apply(m.data, resolver.zone.serial)
        resolver.setZone(zone, changed)
        port.postMessage({ type: 'applied', version, error: null })
      } catch (err) {
        // The previous zone keeps serving; the main thread sends the full state with the next change.
        const version = (err as { version?: number }).version ?? 0
        port.postMessage({ type: 'applied', version, error: (err as Error).message })
      }
      break
    }
    case 'cache': {
      const now = performance.now()
      const buf = Buffer.from(m.buf.buffer, m.buf.byteOffset, m.buf.byteLength)
      resolver.cache?.put(m.key, buf, now - m.age, now + m.left)
      break
    }
    case 'uncache':
      if (m.key === null) resolver.cache?.clear()
      else resolver.cache?.delete(m.key)
      break
    case 'reply': {
      const done = pending.get(m.id)
      if (!done) break
      pending.delete(m.id)
      done(m.buf === null ? null : Buffer.from(m.buf.buffer, m.buf.byteOffset, m.buf.byteLength))
      break
    }
    case 'close': {
      closing = true
      clearInterval(tcpCount)
      clearInterval(touched)
      void listener.close(m.deadline).then(() => {
        for (const done of pending.values()) done(null)
        pending.clear()
        port.postMessage({ type: 'closed' })
        port.close()
      })
      break
    }
  }
})
