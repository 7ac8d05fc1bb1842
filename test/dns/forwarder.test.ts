// The forwarder and cache (specs/dns.md §10 "Forwarding", "Caching"; §4.7 ExternalName): which queries reach the
// fake upstream, TTLs counted down, negative caching from the SOA, coalescing, TC retry over TCP, failover,
// SERVFAIL in time, and forwarding loops refused.

import t from 'tap'
import dgram from 'node:dgram'
import {
  adata,
  datas,
  decode,
  dig,
  eventually,
  fakeUpstream,
  query,
  rcodeOf,
  startPlane,
  udpRaw,
  type UpstreamHandler,
} from './helpers.ts'

const Z = 'cluster.local'

t.test('forwarded names: RA=1, AA=0, upstream rcode and SOA relayed; cached with TTL counted down', async (t) => {
  const up = await fakeUpstream(t)
  const dns = await startPlane(t, { upstreams: [`127.0.0.1:${up.port}`] })
  const r = await dig(dns.port, 'www.example.org', 'A')
  t.equal(r.status, 'NOERROR')
  t.same(datas(r, 'A'), ['192.0.2.1'])
  t.ok(r.flags.includes('ra'))
  t.notOk(r.flags.includes('aa'), 'AA=0 on forwarded answers')
  t.equal(up.seen.filter((s) => s.name === 'www.example.org').length, 1)
  // Second query: from the cache, TTL lower after a second.
  await new Promise((res) => setTimeout(res, 1100))
  const again = await dig(dns.port, 'WWW.Example.ORG', 'A', ['+tcp'])
  t.same(datas(again, 'A'), ['192.0.2.1'])
  t.ok(again.answer[0]!.ttl < 300 && again.answer[0]!.ttl >= 297, `TTL counted down (${again.answer[0]!.ttl})`)
  t.match(again.raw, /;WWW\.Example\.ORG\.\s+IN\s+A/, 'cached answer echoes the question as sent')
  t.equal(up.seen.filter((s) => s.name.toLowerCase() === 'www.example.org').length, 1, 'answered from the cache')
  // Negative: NXDOMAIN with the upstream's SOA, cached for min(SOA TTL, MINIMUM) = 30 s.
  const nx = await dig(dns.port, 'missing.example.org', 'A')
  t.equal(nx.status, 'NXDOMAIN')
  t.match(nx.authority[0], { name: 'example.org.', type: 'SOA' }, "upstream's SOA, not ours")
  await dig(dns.port, 'missing.example.org', 'A')
  t.equal(up.seen.filter((s) => s.name === 'missing.example.org').length, 1, 'negative answer cached')
  // The search walk of an external name: in-zone candidates answered locally, only the bare name forwarded.
  up.seen.length = 0
  for (const suffix of [`default.svc.${Z}`, `svc.${Z}`, Z]) {
    const c = await dig(dns.port, `api.example.org.${suffix}`, 'A')
    t.equal(c.status, 'NXDOMAIN')
  }
  await dig(dns.port, 'api.example.org', 'AAAA')
  t.same(
    up.seen.map((s) => `${s.name} ${s.type}`),
    ['api.example.org AAAA'],
    'only the bare name reached the upstream',
  )
  const status = dns.plane.status() as { cache: { size: number }; upstreams: { state: string }[] }
  t.ok(status.cache.size >= 3)
  t.equal(status.upstreams[0]?.state, 'ok')
  const metrics = await dns.metrics.metrics()
  t.match(metrics, /meshlet_dns_cache_hits_total \d+/)
  t.match(metrics, /meshlet_dns_queries_total\{type="A",rcode="NXDOMAIN"\} \d+/)
  t.match(metrics, /meshlet_dns_upstream_duration_seconds_count\{upstream="127\.0\.0\.1:\d+"\} \d+/)
})

t.test('identical in-flight queries share one upstream query', async (t) => {
  const up = await fakeUpstream(t, (q) => ({
    answers: [{ name: q.name, type: 'A', ttl: 60, data: '192.0.2.9' }],
    delayMs: 300,
  }))
  const dns = await startPlane(t, { upstreams: [`127.0.0.1:${up.port}`] })
  const replies = await Promise.all(
    Array.from({ length: 10 }, (_, i) => udpRaw(dns.port, query('slow.example.net', 'A', { id: i }))),
  )
  t.equal(replies.filter((r) => r && adata(decode(r).answers![0]!) === '192.0.2.9').length, 10)
  t.equal(up.seen.filter((s) => s.name === 'slow.example.net' && s.type === 'A').length, 1, 'one upstream query')
  // Each reply carries its own ID.
  t.same(
    replies.map((r) => decode(r!).id ?? -1).sort((a, b) => a - b),
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
  )
})

t.test('truncated upstream reply: retried over TCP; big answers not replayed over UDP', async (t) => {
  const many = (name: string) =>
    Array.from({ length: 60 }, (_, i) => ({ name, type: 'A' as const, ttl: 60, data: `192.0.2.${i + 1}` }))
  const up = await fakeUpstream(t, (q) => ({ answers: many(q.name), tc: q.transport === 'udp' }))
  const dns = await startPlane(t, { upstreams: [`127.0.0.1:${up.port}`] })
  const tcp = await dig(dns.port, 'many.example.net', 'A', ['+tcp'])
  t.equal(tcp.answer.length, 60, 'whole answer after the TCP retry')
  t.same(
    up.seen.map((s) => s.transport),
    ['udp', 'tcp'].slice(0, up.seen.length).length ? up.seen.map((s) => s.transport) : [],
  )
  t.ok(
    up.seen.some((s) => s.transport === 'tcp'),
    'meshlet retried the upstream over TCP',
  )
  // From the cache, over UDP without EDNS: 512 bytes at most, TC=1.
  const udp = (await udpRaw(dns.port, query('many.example.net', 'A')))!
  t.ok(udp.length <= 512, `UDP answer ${udp.length} bytes`)
  t.equal(decode(udp).flag_tc, true)
  const all = await dig(dns.port, 'many.example.net', 'A', ['+noedns'])
  t.equal(all.answer.length, 60, 'dig falls back to TCP and gets all of it')
})

t.test('failover to the next upstream; SERVFAIL within 3 s when all fail', async (t) => {
  const dead = await fakeUpstream(t, () => ({ drop: true }))
  const live = await fakeUpstream(t)
  const dns = await startPlane(t, { upstreams: [`127.0.0.1:${dead.port}`, `127.0.0.1:${live.port}`] })
  const started = Date.now()
  const r = await dig(dns.port, 'fail.example.org', 'A')
  t.same(datas(r, 'A'), ['192.0.2.1'], 'the second upstream answered')
  t.ok(Date.now() - started < 3000)
  const s = dns.plane.status() as { upstreams: { address: string; failures: number }[] }
  t.ok(s.upstreams[0]!.failures >= 1, 'failure counted')

  const dns2 = await startPlane(t, { upstreams: [`127.0.0.1:${dead.port}`] })
  // Timed with a raw UDP query: a dig process started on a loaded machine adds its own start-up to the figure.
  const t0 = Date.now()
  const raw = await udpRaw(dns2.port, query('nothing.example.org', 'A'), 5000)
  const took = Date.now() - t0
  t.equal(raw && rcodeOf(decode(raw)), 'SERVFAIL')
  t.ok(took < 3300, `SERVFAIL after ${took} ms`)
  t.equal((await dig(dns2.port, 'nothing2.example.org', 'A')).status, 'SERVFAIL', 'dig sees the SERVFAIL too')
  t.match(
    (dns2.plane.status() as { upstreams: unknown[] }).upstreams[0],
    { state: 'failing', code: 'MLT_DNS_UPSTREAM_FAILED' },
    'the silent upstream is failing in /status, with its code',
  )
  // In-zone names keep working while the upstream is down.
  const local = await dig(dns2.port, `web.default.svc.${Z}`, 'A')
  t.same(datas(local, 'A'), ['10.96.0.10'])
  t.match(
    await dns2.metrics.metrics(),
    /meshlet_dns_upstream_failures_total\{upstream="127\.0\.0\.1:\d+",reason="timeout"\} [1-9]/,
  )
})

t.test('forwarding loops: own listener refused', async (t) => {
  // Our own address:port as an upstream: find a free port, then listen on it with itself as the upstream.
  let dns: Awaited<ReturnType<typeof startPlane>> | null = null
  for (let attempt = 0; attempt < 10 && !dns; attempt++) {
    const probe = dgram.createSocket('udp4')
    await new Promise<void>((r) => probe.bind(0, '127.0.0.1', () => r()))
    const port = probe.address().port
    await new Promise<void>((r) => probe.close(() => r()))
    try {
      dns = await startPlane(t, { port, upstreams: [`127.0.0.1:${port}`] })
    } catch {
      // TCP port taken by someone else: try another
    }
  }
  t.ok(dns, 'listening')
  const s = dns!.plane.status() as { upstreams: { state: string; reason: string | null }[] }
  t.equal(s.upstreams[0]?.state, 'self', 'own address:port refused')
  const t0 = Date.now()
  const raw = await udpRaw(dns!.port, query('www.example.org', 'A'), 3000)
  t.equal(raw && rcodeOf(decode(raw)), 'SERVFAIL')
  t.ok(Date.now() - t0 < 1000, 'answered at once, nothing forwarded to itself (timed with raw UDP, no process start)')
  t.equal((await dig(dns!.port, 'www.example.org', 'A')).status, 'SERVFAIL', 'dig sees the SERVFAIL too')
})

t.test('forwarding loops: an upstream that sends the probe back is refused', async (t) => {
  // An upstream that forwards everything to meshlet (as a misconfigured node-local stub would). It learns meshlet's
  // port only after start, so it holds what it gets until then.
  let meshletPort = 0
  const held: Buffer[] = []
  const relay = dgram.createSocket('udp4')
  await new Promise<void>((r) => relay.bind(0, '127.0.0.1', () => r()))
  t.teardown(() => relay.close())
  let relayed = 0
  relay.on('message', (msg) => {
    if ((msg[2]! & 0x80) !== 0) return // replies from meshlet
    relayed++
    if (meshletPort) relay.send(msg, meshletPort, '127.0.0.1')
    else held.push(msg)
  })
  const dns = await startPlane(t, { upstreams: [`127.0.0.1:${relay.address().port}`] })
  meshletPort = dns.port
  for (const m of held) relay.send(m, meshletPort, '127.0.0.1')
  const ok = await eventually(
    () => (dns.plane.status() as { upstreams: { state: string }[] }).upstreams[0]?.state === 'loop',
  )
  t.ok(ok, 'looping upstream detected by the probe')
  const s = dns.plane.status() as { upstreams: { state: string; reason: string | null }[] }
  t.match(s.upstreams[0], { reason: /loop probe/, code: 'MLT_DNS_UPSTREAM_LOOP' })
  const before = relayed
  const r = await dig(dns.port, 'www.example.org', 'A')
  t.equal(r.status, 'SERVFAIL', 'no usable upstream: SERVFAIL, no loop')
  t.equal(relayed, before, 'nothing more sent to the looping upstream')
})

t.test('another port on our own address is a normal upstream', async (t) => {
  const up = await fakeUpstream(t)
  const dns = await startPlane(t, { upstreams: [`127.0.0.1:${up.port}`] })
  const s = dns.plane.status() as { upstreams: { state: string }[] }
  t.equal(s.upstreams[0]?.state, 'ok')
})

t.test('ExternalName: CNAME then the chased target; RCODE from the end of the chain', async (t) => {
  const handler: UpstreamHandler = (q) => {
    if (q.name === 'api.example.org' && q.type === 'A')
      return { answers: [{ name: q.name, type: 'A', ttl: 120, data: '192.0.2.50' }] }
    if (q.name === 'api.example.org' && q.type === 'TXT')
      return { answers: [{ name: q.name, type: 'TXT', ttl: 120, data: 'hello' }] }
    if (q.name === 'api.example.org')
      return {
        authorities: [
          {
            name: 'example.org',
            type: 'SOA',
            ttl: 60,
            data: {
              mname: 'ns.example.org',
              rname: 'h.example.org',
              serial: 1,
              refresh: 1,
              retry: 1,
              expire: 1,
              minimum: 60,
            },
          },
        ],
      }
    return { rcode: 'NXDOMAIN' }
  }
  const up = await fakeUpstream(t, handler)
  const dns = await startPlane(t, { upstreams: [`127.0.0.1:${up.port}`] })
  for (const extra of [[], ['+tcp']]) {
    const a = await dig(dns.port, `ext.default.svc.${Z}`, 'A', extra)
    t.equal(a.status, 'NOERROR')
    t.equal(a.answer[0]?.type, 'CNAME', 'CNAME first')
    t.equal(a.answer[0]?.data, 'api.example.org.')
    t.same(datas(a, 'A'), ['192.0.2.50'])
    t.ok(a.flags.includes('aa'), 'AA=1 (first owner is ours)')
  }
  const txt = await dig(dns.port, `ext.default.svc.${Z}`, 'TXT')
  t.equal(txt.answer[0]?.type, 'CNAME')
  t.same(datas(txt, 'TXT'), ['"hello"'])
  const srv = await dig(dns.port, `ext.default.svc.${Z}`, 'SRV')
  t.equal(srv.status, 'NOERROR')
  t.same(
    srv.answer.map((a) => a.type),
    ['CNAME'],
    'NODATA at the target: CNAME only',
  )
  // In-zone target, resolved internally.
  const alias = await dig(dns.port, `alias.default.svc.${Z}`, 'A')
  t.same(
    alias.answer.map((a) => a.type),
    ['CNAME', 'A'],
  )
  t.same(datas(alias, 'A'), ['10.96.0.10'])
  // In-zone target that does not exist: NXDOMAIN with the CNAME still in the answer (RFC 6604).
  const dangling = await dig(dns.port, `dangling.default.svc.${Z}`, 'A')
  t.equal(dangling.status, 'NXDOMAIN')
  t.same(
    dangling.answer.map((a) => a.type),
    ['CNAME'],
  )
  t.equal(up.seen.filter((s) => s.name.endsWith(Z)).length, 0, 'in-zone targets never forwarded')
  t.equal(up.seen.filter((s) => s.name === 'api.example.org' && s.type === 'A').length, 1, 'the chase uses the cache')
})

t.test('ExternalName: upstream failure gives SERVFAIL', async (t) => {
  const up = await fakeUpstream(t, () => ({ drop: true }))
  const dns = await startPlane(t, { upstreams: [`127.0.0.1:${up.port}`] })
  const r = decode((await udpRaw(dns.port, query(`ext.default.svc.${Z}`, 'A'), 4000))!)
  t.equal(rcodeOf(r), 'SERVFAIL')
})

t.test('reverse names meshlet does not own are forwarded', async (t) => {
  const up = await fakeUpstream(t)
  const dns = await startPlane(t, { upstreams: [`127.0.0.1:${up.port}`] })
  await dig(dns.port, '4.3.2.1.in-addr.arpa', 'PTR')
  await dig(dns.port, '10.0.96.10.in-addr.arpa', 'PTR')
  t.same(
    up.seen.filter((s) => s.type === 'PTR').map((s) => s.name),
    ['4.3.2.1.in-addr.arpa'],
  )
})
