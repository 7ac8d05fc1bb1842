// Cached forwards on the fast path (dns/fast-cache.ts): after one upstream query a name is answered from the
// stored wire bytes with the client's ID, flags and name case patched in and the TTLs counted down; negative
// answers the same with their SOA; and with --dns-workers a name filled through one worker is answered by the others
// without another upstream query. dig as the client, a fake upstream on loopback counting what it is asked.

import dgram from 'node:dgram'
import t from 'tap'
import { decode, dig, eventually, fakeUpstream, query, startPlane, udpRaw, type DigResult } from './helpers.ts'

interface Status {
  cache: { size: number; fastHits: number }
  workers: { worker: number; cacheHits: number; queries: number }[] | null
}

const fastHits = (plane: { status(): unknown }) => (plane.status() as Status).cache.fastHits
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const ttlOf = (r: DigResult) => r.answer[0]?.ttl ?? -1
/** Upstream queries other than the loop probe (HINFO) sent at start. */
const asked = (up: { seen: { type: string }[] }) => up.seen.filter((s) => s.type !== 'HINFO').length

t.test('a cached forward: TTLs counted down, ID and flags patched, the case echoed', async (t) => {
  const up = await fakeUpstream(t)
  const dns = await startPlane(t, { upstreams: [`127.0.0.1:${up.port}`], workers: 1 })
  const first = await dig(dns.port, 'www.example.org', 'A')
  t.equal(first.answer[0]?.data, '192.0.2.1')
  t.equal(ttlOf(first), 300, 'the upstream TTL on the miss')
  const hits0 = fastHits(dns.plane)

  // The elapsed whole second changes: the stored TTLs are rewritten.
  await sleep(2100)
  for (const extra of [[], ['+noedns']]) {
    const again = await dig(dns.port, 'www.example.org', 'A', extra)
    t.equal(again.status, 'NOERROR')
    t.equal(again.answer[0]?.data, '192.0.2.1', `answer ${extra.join(' ') || 'with EDNS'}`)
    t.ok(ttlOf(again) <= 298 && ttlOf(again) >= 290, `TTL counted down (${ttlOf(again)}) ${extra.join(' ')}`)
  }
  t.equal(fastHits(dns.plane), hits0 + 2, 'both answered on the fast path')
  t.equal(up.seen.filter((s) => s.name.toLowerCase() === 'www.example.org').length, 1, 'one upstream query')

  // ID and question case from each query, byte for byte; the next lowercase query gets lowercase back.
  const mixed = query('WwW.ExAmPlE.oRg', 'A', { id: 0x5a17 })
  const r1 = (await udpRaw(dns.port, mixed))!
  t.equal(r1.readUInt16BE(0), 0x5a17, 'ID patched')
  t.same(r1.subarray(12, mixed.length), mixed.subarray(12), 'question echoed with its case')
  t.equal(decode(r1).answers?.length, 1)
  const lower = query('www.example.org', 'A', { id: 0x0102 })
  const r2 = (await udpRaw(dns.port, lower))!
  t.equal(r2.readUInt16BE(0), 0x0102)
  t.same(r2.subarray(12, lower.length), lower.subarray(12), 'lowercase echoed after an upper-case query')

  // RD as asked, RA set, AA clear; CD echoed.
  const nord = await dig(dns.port, 'www.example.org', 'A', ['+norecurse'])
  t.notOk(nord.flags.includes('rd'), 'RD clear when the query had none')
  t.ok(nord.flags.includes('ra'))
  t.notOk(nord.flags.includes('aa'))
  const cd = await dig(dns.port, 'www.example.org', 'A', ['+cd'])
  t.ok(cd.flags.includes('cd') && cd.flags.includes('rd'), 'CD and RD echoed')
  t.equal(fastHits(dns.plane), hits0 + 6)
  t.equal(up.seen.filter((s) => s.name.toLowerCase() === 'www.example.org').length, 1, 'still one upstream query')
})

t.test('negative answers cached with their SOA (RFC 2308), counted down the same', async (t) => {
  const up = await fakeUpstream(t)
  const dns = await startPlane(t, { upstreams: [`127.0.0.1:${up.port}`], workers: 1 })
  const nx = await dig(dns.port, 'missing.example.org', 'A')
  t.equal(nx.status, 'NXDOMAIN')
  t.equal(nx.authority[0]?.type, 'SOA')
  // The upstream's SOA has TTL 60 and MINIMUM 30: relayed with min(TTL, MINIMUM) (RFC 2308 §3, §5).
  t.equal(nx.authority[0]?.ttl, 30, 'SOA TTL = min(SOA TTL, MINIMUM)')
  const nodata = await dig(dns.port, 'www.example.org', 'TXT')
  t.equal(nodata.status, 'NOERROR')
  t.equal(nodata.answer.length, 0)
  t.equal(nodata.authority[0]?.type, 'SOA', 'NODATA with the SOA')
  t.equal(nodata.authority[0]?.ttl, 30, 'NODATA: the same SOA TTL')
  const hits0 = fastHits(dns.plane)
  await sleep(2100)
  const nx2 = await dig(dns.port, 'MISSING.example.org', 'A')
  t.equal(nx2.status, 'NXDOMAIN')
  t.match(nx2.raw, /MISSING\.example\.org/, 'case echoed')
  t.ok(nx2.authority[0]!.ttl <= 28 && nx2.authority[0]!.ttl >= 20, `SOA TTL counted down (${nx2.authority[0]?.ttl})`)
  const nodata2 = await dig(dns.port, 'www.example.org', 'TXT', ['+noedns'])
  t.equal(nodata2.status, 'NOERROR')
  t.equal(nodata2.authority[0]?.type, 'SOA')
  t.ok(nodata2.authority[0]!.ttl <= 28, `NODATA SOA TTL counted down from 30 (${nodata2.authority[0]?.ttl})`)
  // The general path (TCP) relays the same TTL.
  const nx3 = await dig(dns.port, 'missing.example.org', 'A', ['+tcp'])
  t.ok(nx3.authority[0]!.ttl <= 28, `TCP: SOA TTL counted down from 30 (${nx3.authority[0]?.ttl})`)
  t.equal(fastHits(dns.plane), hits0 + 2, 'answered on the fast path')
  t.equal(asked(up), 2, 'one upstream query each')
})

t.test('an entry past its TTL is asked again, then served again', async (t) => {
  const up = await fakeUpstream(t, (q) =>
    q.type === 'A' ? { answers: [{ name: q.name, type: 'A', ttl: 1, data: '192.0.2.9' }] } : null,
  )
  const dns = await startPlane(t, { upstreams: [`127.0.0.1:${up.port}`], workers: 1 })
  t.equal((await dig(dns.port, 'short.example.net', 'A')).answer[0]?.data, '192.0.2.9')
  t.equal((await dig(dns.port, 'short.example.net', 'A')).answer[0]?.ttl, 1, 'a hit within the second')
  t.equal(asked(up), 1)
  await sleep(1200)
  t.equal((await dig(dns.port, 'short.example.net', 'A')).answer[0]?.ttl, 1, 'fresh from the upstream')
  t.equal(asked(up), 2, 'expired: asked again')
})

t.test('workers: a name filled through one worker is a cache hit in every other one', async (t) => {
  const up = await fakeUpstream(t)
  const dns = await startPlane(t, { upstreams: [`127.0.0.1:${up.port}`], workers: 2 })
  t.equal((await dig(dns.port, 'api.example.org', 'A')).answer[0]?.data, '192.0.2.1')
  // Each worker gets the broadcast asynchronously; wait until a hit is possible everywhere.
  await sleep(100)
  // A new socket (new source port) per query: the kernel spreads them over both workers (SO_REUSEPORT).
  const replies = await Promise.all(
    Array.from({ length: 60 }, (_, i) => udpRaw(dns.port, query('api.example.org', 'A', { id: i + 1 }), 4000)),
  )
  t.equal(
    replies.filter((r, i) => r && r.readUInt16BE(0) === i + 1 && decode(r).answers?.length === 1).length,
    60,
    'every query answered with its own ID',
  )
  t.equal(up.seen.filter((s) => s.name === 'api.example.org').length, 1, 'one upstream query in all')
  const workers = (dns.plane.status() as Status).workers!
  t.ok(
    workers.every((w) => w.cacheHits > 0),
    `both workers answered from their cache (${workers.map((w) => w.cacheHits).join(', ')})`,
  )
  // The other direction: the name expires nowhere early, and a second name fills again for all.
  t.equal((await dig(dns.port, 'other.example.org', 'AAAA')).answer[0]?.data, '2001:db8::1')
  t.ok(
    await eventually(async () => {
      const rs = await Promise.all(
        Array.from({ length: 20 }, () => udpRaw(dns.port, query('other.example.org', 'AAAA'), 2000)),
      )
      return rs.every((r) => r && decode(r).answers?.length === 1)
    }, 5000),
  )
  t.equal(up.seen.filter((s) => s.name === 'other.example.org').length, 1, 'filled once for both workers')
})

t.test('a wall clock stepped back or forward changes no TTL and expires nothing (monotonic clock)', async (t) => {
  const up = await fakeUpstream(t)
  const dns = await startPlane(t, { upstreams: [`127.0.0.1:${up.port}`], workers: 1 })
  t.equal(ttlOf(await dig(dns.port, 'www.example.org', 'A')), 300)
  const realNow = Date.now
  t.teardown(() => {
    Date.now = realNow
  })
  for (const step of [-3_600_000, 3_600_000]) {
    Date.now = () => realNow() + step
    for (const extra of [['+tcp'], []]) {
      const r = await dig(dns.port, 'www.example.org', 'A', extra)
      const how = `${step < 0 ? 'back' : 'forward'} an hour, ${extra[0] ?? 'UDP'}`
      t.equal(r.answer[0]?.data, '192.0.2.1', how)
      t.ok(ttlOf(r) <= 300 && ttlOf(r) >= 290, `${how}: TTL ${ttlOf(r)}`)
    }
  }
  Date.now = realNow
  t.equal(asked(up), 1, 'still the one upstream query: nothing expired early')
})

/** Sends one query per name through one socket, at most `window` outstanding; resolves with the replies received. */
async function fill(port: number, names: string[], window = 100): Promise<number> {
  const s = dgram.createSocket('udp4')
  let got = 0
  let sent = 0
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()))
  const done = new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 60_000)
    const next = () => {
      if (sent < names.length) s.send(query(names[sent]!, 'A', { id: sent++ & 0xffff }), port, '127.0.0.1')
    }
    s.on('message', () => {
      if (++got === names.length) {
        clearTimeout(timer)
        resolve()
      } else next()
    })
    for (let i = 0; i < window; i++) next()
  })
  await done
  s.close()
  return got
}

t.test('a hit on the fast path refreshes the entry for LRU eviction', async (t) => {
  const up = await fakeUpstream(t)
  const dns = await startPlane(t, { upstreams: [`127.0.0.1:${up.port}`], workers: 1 })
  t.equal((await dig(dns.port, 'hot.example.org', 'A')).answer[0]?.data, '192.0.2.1')
  // 9,999 more names: the cache (10,000 entries) is full, the hot name its oldest entry.
  const names = Array.from({ length: 9999 }, (_, i) => `n${i}.example.org`)
  t.equal(await fill(dns.port, names), names.length, 'every filler answered')
  t.equal((dns.plane.status() as Status).cache.size, 10000)
  const hits0 = fastHits(dns.plane)
  t.equal((await dig(dns.port, 'hot.example.org', 'A')).answer[0]?.data, '192.0.2.1')
  t.equal(fastHits(dns.plane), hits0 + 1, 'the hot name answered on the fast path')
  // One more name evicts the least recently used one: the first filler, not the hot name.
  await dig(dns.port, 'one-more.example.org', 'A')
  await dig(dns.port, 'hot.example.org', 'A')
  t.equal(up.seen.filter((s) => s.name === 'hot.example.org').length, 1, 'the hot name was not evicted')
  await dig(dns.port, 'n0.example.org', 'A')
  t.equal(up.seen.filter((s) => s.name === 'n0.example.org').length, 2, 'the oldest untouched name was')
})
