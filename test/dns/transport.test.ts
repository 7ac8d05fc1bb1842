// Transport rules (specs/dns.md §10, §4.14, §4.15): truncation and TCP fallback with a 100-endpoint headless
// Service, EDNS sizes, TCP framing and pipelining, malformed input, SERVFAIL before the first Snapshot, and answers
// following a new Snapshot within 100 ms.

import t from 'tap'
import { networkInterfaces } from 'node:os'
import { FIXTURE, adata, datas, decode, dig, objectsOf, query, rcodeOf, startPlane, tcpRaw, udpRaw } from './helpers.ts'

const Z = 'cluster.local'

function bigService(n: number): string {
  const endpoints = Array.from(
    { length: n },
    (_, i) => `    - addresses: ["10.250.${Math.floor(i / 200)}.${(i % 200) + 1}"]`,
  ).join('\n')
  return `
apiVersion: v1
kind: Service
metadata: { name: big, namespace: data }
spec:
  clusterIP: None
  ports: [{ name: http, port: 80 }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: big-1, namespace: data, labels: { kubernetes.io/service-name: big } }
addressType: IPv4
ports: [{ name: http, port: 80, protocol: TCP }]
endpoints:
${endpoints}
`
}

t.test('headless Service with 100 endpoints: TC over UDP, whole answer over TCP', async (t) => {
  const dns = await startPlane(t, { yaml: `${FIXTURE}\n---\n${bigService(100)}` })
  const name = `big.data.svc.${Z}`
  // No EDNS: 512 bytes, as many whole RRs as fit, TC=1 (dig +ignore shows the truncated answer).
  const plain = await dig(dns.port, name, 'A', ['+noedns', '+ignore'])
  t.ok(plain.flags.includes('tc'), 'TC=1 without EDNS')
  t.equal(plain.answer.length, 29, '29 whole A records fit in 512 bytes')
  const raw = await udpRaw(dns.port, query(name, 'A'))
  t.ok(raw && raw.length <= 512, 'UDP answer without EDNS ≤ 512 bytes')
  // EDNS 4096 is capped at 1232.
  const big = await udpRaw(dns.port, query(name, 'A', { edns: 4096 }))
  t.ok(big && big.length <= 1232 && big.length > 512, `EDNS answer ≤ 1232 bytes (${big?.length})`)
  const dbig = decode(big!)
  t.equal(dbig.flag_tc, true)
  t.equal(dbig.answers?.length, 73)
  const opt = dbig.additionals?.find((a) => a.type === 'OPT') as { udpPayloadSize?: number } | undefined
  t.equal(opt?.udpPayloadSize, 1232, 'OPT echoed with our size')
  // EDNS below 512 counts as 512.
  const small = await udpRaw(dns.port, query(name, 'A', { edns: 100 }))
  t.equal(decode(small!).answers?.length, 28, 'EDNS 100 → 512 bytes (one RR less for the OPT)')
  // dig retries over TCP by itself and gets all 100.
  const full = await dig(dns.port, name, 'A', ['+noedns'])
  t.equal(full.answer.length, 100, 'dig falls back to TCP and gets 100 records')
  t.notOk(full.flags.includes('tc'))
  const tcp = await dig(dns.port, name, 'A', ['+tcp'])
  t.equal(tcp.answer.length, 100)
  t.equal(new Set(datas(tcp, 'A')).size, 100, 'no duplicates')
  // SRV with 100 targets: additional records are dropped before TC is set.
  const srv = await udpRaw(dns.port, query(`_http._tcp.${name}`, 'SRV', { edns: 1232 }))
  const dsrv = decode(srv!)
  t.ok(srv!.length <= 1232)
  t.equal(dsrv.flag_tc, true)
  t.equal(dsrv.additionals?.filter((a) => a.type === 'A').length, 0, 'no additional A records in a truncated answer')
  const srvTcp = await dig(dns.port, `_http._tcp.${name}`, 'SRV', ['+tcp'])
  t.equal(srvTcp.answer.length, 100)
  t.equal(srvTcp.answer[0]?.data.split(' ')[1], '1', 'weight = max(1, floor(100/100))')
  t.equal(srvTcp.additional.filter((a) => a.type === 'A').length, 100, 'TCP answer carries every target address')
})

t.test('shuffled order for headless answers', async (t) => {
  const dns = await startPlane(t, { yaml: `${FIXTURE}\n---\n${bigService(10)}` })
  const orders = new Set<string>()
  for (let i = 0; i < 10; i++) {
    const r = decode((await udpRaw(dns.port, query(`big.data.svc.${Z}`, 'A')))!)
    orders.add((r.answers ?? []).map(adata).join(','))
    t.equal(r.answers?.length, 10)
  }
  t.ok(orders.size > 1, `order changes between answers (${orders.size} orders in 10)`)
})

t.test('header: ID, RD and CD copied, RA=1, DO echoed only with OPT', async (t) => {
  const dns = await startPlane(t)
  const q = query(`web.default.svc.${Z}`, 'A', { id: 0xbeef, rd: false })
  q[3] = q[3]! | 0x10 // CD
  const r = (await udpRaw(dns.port, q))!
  const d = decode(r)
  t.equal(d.id, 0xbeef)
  t.equal(d.flag_rd, false)
  t.equal(d.flag_cd, true)
  t.equal(d.flag_ra, true)
  t.equal(d.flag_aa, true)
  t.equal(d.additionals?.length ?? 0, 0, 'no OPT when the query had none')
  const withDo = decode((await udpRaw(dns.port, query(`web.default.svc.${Z}`, 'A', { edns: 1232, dnssecOk: true })))!)
  const opt = withDo.additionals?.find((a) => a.type === 'OPT') as
    { flags?: number; extendedRcode?: number } | undefined
  t.ok(opt, 'OPT echoed')
  t.equal((opt!.flags ?? 0) & 0x8000, 0x8000, 'DO copied')
})

t.test('TCP: several queries on one connection, pipelined, in one write', async (t) => {
  const dns = await startPlane(t)
  const names = ['web.default', 'v6.default', 'db.data', 'nope.default']
  const msgs = names.map((n, i) => query(`${n}.svc.${Z}`, 'A', { id: 100 + i }))
  const replies = await tcpRaw(dns.port, msgs)
  t.equal(replies.length, 4)
  const byId = new Map(replies.map((r) => [decode(r).id, decode(r)]))
  t.same(byId.get(100)?.answers?.map(adata), ['10.96.0.10'])
  t.same(byId.get(101)?.answers?.map(adata), ['10.96.0.11'])
  t.equal(byId.get(102)?.answers?.length, 2)
  t.equal(rcodeOf(byId.get(103)!), 'NXDOMAIN')
  // A query split across two TCP segments.
  const m = query(`web.default.svc.${Z}`, 'A', { id: 7 })
  const framed = Buffer.concat([Buffer.from([m.length >> 8, m.length & 255]), m])
  const { connect } = await import('node:net')
  const reply = await new Promise<Buffer>((resolve) => {
    const s = connect(dns.port, '127.0.0.1', () => {
      s.write(framed.subarray(0, 5))
      setTimeout(() => s.write(framed.subarray(5)), 50)
    })
    s.on('data', (c: Buffer) => (s.destroy(), resolve(c.subarray(2))))
  })
  t.equal(decode(reply).id, 7)
})

function header(id: number, flags: number, qd: number, an = 0, ns = 0, ar = 0): Buffer {
  const b = Buffer.alloc(12)
  b.writeUInt16BE(id, 0)
  b.writeUInt16BE(flags, 2)
  b.writeUInt16BE(qd, 4)
  b.writeUInt16BE(an, 6)
  b.writeUInt16BE(ns, 8)
  b.writeUInt16BE(ar, 10)
  return b
}

const QNAME = Buffer.from('\x03web\x07default\x03svc\x07cluster\x05local\x00', 'latin1')
const q = (type: number, cls = 1) => Buffer.concat([QNAME, Buffer.from([type >> 8, type & 255, cls >> 8, cls & 255])])
const opt = (version = 0) => Buffer.from([0, 0, 41, 4, 0xd0, 0, version, 0, 0, 0, 0])

t.test('malformed and unusual messages (specs/dns.md §4.15)', async (t) => {
  const dns = await startPlane(t)
  const expectRcode = async (label: string, msg: Buffer, rcode: number | null) => {
    for (const transport of ['udp', 'tcp'] as const) {
      const r =
        transport === 'udp'
          ? await udpRaw(dns.port, msg, rcode === null ? 300 : 2000)
          : ((await tcpRaw(dns.port, [msg], 1, rcode === null ? 300 : 2000))[0] ?? null)
      if (rcode === null) {
        t.equal(r, null, `${transport} ${label}: dropped`)
        continue
      }
      t.ok(r, `${transport} ${label}: answered`)
      if (!r) continue
      t.equal(r.readUInt16BE(0), msg.readUInt16BE(0), `${transport} ${label}: ID echoed`)
      t.equal(r[2]! & 0x80, 0x80, `${transport} ${label}: QR=1`)
      t.equal(r[3]! & 0x0f, rcode & 0x0f, `${transport} ${label}: rcode`)
    }
  }
  await expectRcode('shorter than 12 bytes', Buffer.from([1, 2, 3]), null)
  await expectRcode('QR=1', Buffer.concat([header(1, 0x8000, 1), q(1)]), null)
  await expectRcode('opcode STATUS', Buffer.concat([header(2, 2 << 11, 1), q(1)]), 4)
  await expectRcode('opcode NOTIFY', Buffer.concat([header(3, 4 << 11, 1), q(1)]), 4)
  await expectRcode('QDCOUNT=0', header(4, 0x100, 0), 1)
  await expectRcode('QDCOUNT=2', Buffer.concat([header(5, 0x100, 2), q(1), q(1)]), 1)
  await expectRcode('ANCOUNT=1', Buffer.concat([header(6, 0x100, 1, 1), q(1)]), 1)
  await expectRcode('truncated question', Buffer.concat([header(7, 0x100, 1), QNAME.subarray(0, 10)]), 1)
  await expectRcode(
    'label > 63',
    Buffer.concat([header(8, 0x100, 1), Buffer.from([64]), Buffer.alloc(64, 97), Buffer.from([0, 0, 1, 0, 1])]),
    1,
  )
  const long = Buffer.concat([
    ...Array.from({ length: 5 }, () => Buffer.concat([Buffer.from([60]), Buffer.alloc(60, 97)])),
    Buffer.from([0, 0, 1, 0, 1]),
  ])
  await expectRcode('name > 255 octets', Buffer.concat([header(9, 0x100, 1), long]), 1)
  await expectRcode(
    'pointer loop in question',
    Buffer.concat([header(10, 0x100, 1), Buffer.from([0xc0, 12, 0, 1, 0, 1])]),
    1,
  )
  await expectRcode('two OPT RRs', Buffer.concat([header(11, 0x100, 1, 0, 0, 2), q(1), opt(), opt()]), 1)
  await expectRcode('QTYPE OPT', Buffer.concat([header(12, 0x100, 1), q(41)]), 1)
  await expectRcode('QTYPE TSIG', Buffer.concat([header(13, 0x100, 1), q(250)]), 1)
  await expectRcode('QTYPE MAILA', Buffer.concat([header(14, 0x100, 1), q(254)]), 1)
  await expectRcode('QTYPE AXFR', Buffer.concat([header(15, 0x100, 1), q(252)]), 5)
  await expectRcode('QTYPE IXFR', Buffer.concat([header(16, 0x100, 1), q(251)]), 5)
  await expectRcode('class CH', Buffer.concat([header(17, 0x100, 1), q(1, 3)]), 5)
  await expectRcode('class ANY', Buffer.concat([header(18, 0x100, 1), q(1, 255)]), 0)
  await expectRcode('TC set in a query is ignored', Buffer.concat([header(19, 0x300, 1), q(1)]), 0)
  // BADVERS: header rcode 0, OPT extended rcode 1 (16 >> 4), OPT version 0.
  const bad = (await udpRaw(dns.port, Buffer.concat([header(20, 0x100, 1, 0, 0, 1), q(1), opt(1)])))!
  t.equal(bad[3]! & 0x0f, 0, 'BADVERS: header rcode 0')
  const d = decode(bad)
  const o = d.additionals?.find((a) => a.type === 'OPT') as { extendedRcode?: number; version?: number } | undefined
  t.equal(o?.extendedRcode, 1, 'BADVERS: extended rcode 1')
  t.equal(o?.extendedRcode, 1)
  const optAt = bad.length - 11
  t.equal(bad[optAt + 6], 0, 'BADVERS: OPT version 0')
  // After all of that the server still answers.
  const ok = await dig(dns.port, `web.default.svc.${Z}`, 'A')
  t.same(datas(ok, 'A'), ['10.96.0.10'])
})

t.test('SERVFAIL for in-zone names until the first Snapshot; forwarding works at once', async (t) => {
  const dns = await startPlane(t, { yaml: null })
  const r = await dig(dns.port, `web.default.svc.${Z}`, 'A')
  t.equal(r.status, 'SERVFAIL', 'never NXDOMAIN before the data is loaded')
  t.match(r.authority[0], { type: 'SOA' })
  t.equal(dns.plane.ready(), false)
  const local = await dig(dns.port, 'localhost', 'A')
  t.equal(local.status, 'NOERROR')
  await dns.setYaml(FIXTURE)
  t.equal(dns.plane.ready(), true)
  const after = await dig(dns.port, `web.default.svc.${Z}`, 'A')
  t.same(datas(after, 'A'), ['10.96.0.10'])
})

/**
 * Polls with raw UDP queries (no process spawn) until `done` holds for the answer; ms from `started`, or -1 after 2 s.
 */
async function msUntil(port: number, name: string, done: (r: ReturnType<typeof decode>) => boolean): Promise<number> {
  const started = Date.now()
  while (Date.now() - started < 2000) {
    const raw = await udpRaw(port, query(name, 'A'))
    if (raw && done(decode(raw))) return Date.now() - started
  }
  return -1
}

// The bound is the plane's (the Store publishes on the next tick, the zone updates in place), but a shared 2-core CI
// machine can stall any one poll for longer: each change must land within 2 s, and the best of three within 100 ms.
const TRIES = 3

t.test('answers follow a new Snapshot within 100 ms', async (t) => {
  const dns = await startPlane(t)
  let yaml = FIXTURE
  const added: number[] = []
  for (let i = 0; i < TRIES; i++) {
    const name = `late${i}.default.svc.${Z}`
    t.equal((await dig(dns.port, name, 'A')).status, 'NXDOMAIN')
    const ip = `10.96.0.${77 + i}`
    yaml += `\n---\napiVersion: v1\nkind: Service\nmetadata: { name: late${i} }\nspec:\n  clusterIP: ${ip}\n  ports: [{ port: 80 }]\n`
    dns.store.setObjects(objectsOf(yaml), [])
    const took = await msUntil(dns.port, name, (r) => {
      const first = r.answers?.[0]
      return rcodeOf(r) === 'NOERROR' && first !== undefined && adata(first) === ip
    })
    t.ok(took >= 0, `new Service ${i} answered (after ${took} ms)`)
    added.push(took)
  }
  t.ok(Math.min(...added) < 100, `a new Service answered within 100 ms (best of ${added.join(', ')} ms)`)
  // Endpoint becoming unready: db-N gone from the headless answer once health says so, one Pod per try.
  const removed: number[] = []
  const pods = [
    ['data/db-0', '10.244.2.10'],
    ['data/db-1', '10.244.2.11'],
  ] as const
  for (const [pod, ip] of pods) {
    dns.store.setPodHealth(pod, { ready: false, started: true, restartCount: 0, reason: 'probe failed' })
    const gone = await msUntil(dns.port, `db.data.svc.${Z}`, (r) => (r.answers ?? []).every((a) => adata(a) !== ip))
    t.ok(gone >= 0, `unready endpoint ${pod} removed (after ${gone} ms)`)
    removed.push(gone)
  }
  t.ok(Math.min(...removed) < 100, `an unready endpoint removed within 100 ms (best of ${removed.join(', ')} ms)`)
  const host = await dig(dns.port, `db-0.db.data.svc.${Z}`, 'A')
  t.equal(host.status, 'NXDOMAIN', 'its hostname record went with it')
  // Service removed.
  const without = FIXTURE.replace(
    /---\napiVersion: v1\nkind: Service\nmetadata: \{ name: plain, namespace: default \}[\s\S]*?(?=---)/,
    '',
  )
  t.not(without, FIXTURE)
  await dns.setYaml(without)
  t.equal((await dig(dns.port, `plain.default.svc.${Z}`, 'A')).status, 'NXDOMAIN', 'removed Service is NXDOMAIN')
})

const hasV6 = Object.values(networkInterfaces()).some((l) => l?.some((a) => a.address === '::1'))
t.test('IPv6 listener', { skip: hasV6 ? false : 'no ::1 on this host' }, async (t) => {
  const dns = await startPlane(t, { host: '::1' })
  const r = await dig(dns.port, `v6.default.svc.${Z}`, 'AAAA', [], '::1')
  t.same(datas(r, 'AAAA'), ['fd00:96::11'])
  const tcp = await dig(dns.port, `v6.default.svc.${Z}`, 'AAAA', ['+tcp'], '::1')
  t.same(datas(tcp, 'AAAA'), ['fd00:96::11'])
})
