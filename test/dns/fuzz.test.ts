// Robustness: at least 100,000 random and mutated packets over UDP and TCP within about 20 s, then the server must
// still answer correctly (specs/dns.md §4.15: never a crash, never a hang).

import t from 'tap'
import dgram from 'node:dgram'
import net from 'node:net'
import { datas, dig, query, startPlane } from './helpers.ts'

const Z = 'cluster.local'
const UDP_PACKETS = 80_000
const TCP_FRAMES = 25_000
const BUDGET_MS = 20_000

/** xorshift32: reproducible from the printed seed. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1
  return () => {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    return (x >>> 0) / 4294967296
  }
}

const seeds = [
  query(`web.default.svc.${Z}`, 'A'),
  query(`_http._tcp.web.default.svc.${Z}`, 'SRV', { edns: 1232 }),
  query(`db.data.svc.${Z}`, 'AAAA', { edns: 512, dnssecOk: true }),
  query('10.0.96.10.in-addr.arpa', 'PTR'),
  query(`ext.default.svc.${Z}`, 'A'),
  query(`nope.${Z}`, 'TXT'),
  query('localhost', 'ANY'),
]

function packet(rand: () => number): Buffer {
  const r = rand()
  if (r < 0.25) {
    // Pure random bytes, often with a plausible header.
    const len = Math.floor(rand() * 300)
    const b = Buffer.alloc(len)
    for (let i = 0; i < len; i++) b[i] = Math.floor(rand() * 256)
    if (len >= 12 && rand() < 0.7) b[2] = b[2]! & 0x7f // QR=0 so it is not simply dropped
    return b
  }
  const base = Buffer.from(seeds[Math.floor(rand() * seeds.length)]!)
  const b = r < 0.35 ? base.subarray(0, Math.floor(rand() * base.length)) : base
  const flips = 1 + Math.floor(rand() * 6)
  for (let i = 0; i < flips && b.length > 0; i++) {
    const at = Math.floor(rand() * b.length)
    const kind = rand()
    if (kind < 0.4) b[at] = b[at]! ^ (1 << Math.floor(rand() * 8))
    else if (kind < 0.7) b[at] = Math.floor(rand() * 256)
    else if (b.length >= 12)
      b.writeUInt16BE(Math.floor(rand() * 4) === 0 ? 0xffff : Math.floor(rand() * 4), 4 + 2 * Math.floor(rand() * 4)) // counts
  }
  if (b.length > 2) b[2] = b[2]! & 0x7f
  if (rand() < 0.05) return Buffer.concat([b, Buffer.alloc(Math.floor(rand() * 64), 0xc0)])
  return b
}

t.test('fuzz: 100,000+ malformed and mutated packets over UDP and TCP', async (t) => {
  const seed = Date.now() & 0xffffffff
  t.comment(`seed ${seed}`)
  const rand = rng(seed)
  const dns = await startPlane(t)
  const started = Date.now()

  // UDP: bursts of 100, yielding between bursts so the server (same process) reads them instead of the kernel
  // dropping them from a full socket buffer.
  const udp = dgram.createSocket('udp4')
  await new Promise<void>((r) => udp.bind(0, '127.0.0.1', () => r()))
  let replies = 0
  udp.on('message', () => replies++)
  let sentUdp = 0
  while (sentUdp < UDP_PACKETS && Date.now() - started < BUDGET_MS * 0.6) {
    for (let i = 0; i < 100; i++, sentUdp++) udp.send(packet(rand), dns.port, '127.0.0.1')
    await new Promise((r) => setTimeout(r, 1))
  }
  // TCP: several connections, each a stream of framed random/mutated messages; some with a broken length prefix.
  let sentTcp = 0
  const conns = 8
  await Promise.all(
    Array.from(
      { length: conns },
      (_, c) =>
        new Promise<void>((resolve) => {
          const s = net.connect(dns.port, '127.0.0.1')
          s.on('error', () => resolve())
          s.on('close', () => resolve())
          s.on('data', () => {})
          s.on('connect', async () => {
            const per = Math.ceil(TCP_FRAMES / conns)
            for (let i = 0; i < per && Date.now() - started < BUDGET_MS; i += 200) {
              const frames: Buffer[] = []
              for (let j = 0; j < 200; j++) {
                const p = packet(rand)
                frames.push(Buffer.from([p.length >> 8, p.length & 255]), p)
              }
              sentTcp += 200
              if (s.destroyed) break
              if (!s.write(Buffer.concat(frames))) await new Promise((r) => s.once('drain', r))
            }
            // The last connection ends with garbage framing: a length larger than what follows, then close.
            if (c === conns - 1) s.write(Buffer.from([0xff, 0xff, 1, 2, 3]))
            s.end()
          })
        }),
    ),
  )
  udp.close()
  const took = Date.now() - started
  t.comment(`sent ${sentUdp} UDP + ${sentTcp} TCP packets in ${took} ms; ${replies} UDP replies`)
  t.ok(sentUdp + sentTcp >= 100_000, `at least 100,000 packets (${sentUdp + sentTcp})`)
  t.ok(took < BUDGET_MS + 5000, 'bounded in time')
  t.ok(replies > sentUdp / 4, 'the server answered most of the storm (a quarter of the packets are dropped by design)')

  // Still correct afterwards, over both transports.
  const a = await dig(dns.port, `web.default.svc.${Z}`, 'A')
  t.same(datas(a, 'A'), ['10.96.0.10'])
  const b = await dig(dns.port, `_postgres._tcp.db.data.svc.${Z}`, 'SRV', ['+tcp'])
  t.equal(b.answer.length, 2)
  const c = await dig(dns.port, `nope.${Z}`, 'A')
  t.equal(c.status, 'NXDOMAIN')
})
