// The UDP fast path (dns/fast.ts) against the general path (dns/answer.ts) on the same zone: every name of the test
// cluster with every common type, in lower and upper case, with and without EDNS (DO set or not), RD and CD, plus
// in-zone NXDOMAIN and names the fast path must leave alone. Where the fast path answers, the reply must be the
// general path's reply (A/AAAA order aside: both shuffle). Also: template reuse (case of an earlier query never
// leaks), and `busy` (a queued send) gives a copy.

import t from 'tap'
import dnsPacket from 'dns-packet'
import { Store } from '../../model/store.ts'
import { parseCidr } from '../../model/ip.ts'
import type { Snapshot } from '../../model/snapshot.ts'
import { Resolver } from '../../dns/answer.ts'
import { buildZone, type ZoneOptions } from '../../dns/zone.ts'
import { Query, parseQuery } from '../../dns/wire.ts'
import { FIXTURE, objectsOf, rcodeOf } from './helpers.ts'

const Z = 'cluster.local'

function zoneOf(): ReturnType<typeof buildZone> {
  const store = new Store({
    nodeName: 'test-node',
    serviceCidrs: [parseCidr('10.96.0.0/16')!, parseCidr('fd00:96::/112')!],
  })
  store.setObjects(objectsOf(FIXTURE), [])
  store.flush()
  let snap: Snapshot | null = null
  store.subscribe((s) => (snap = s))
  const options: ZoneOptions = { zone: Z, ttl: 5, pods: 'verified', serverAddresses: ['127.0.0.1'] }
  return buildZone(snap!, options, 0)
}

function wireToText(key: string): string {
  const b = Buffer.from(key, 'latin1')
  const labels: string[] = []
  let p = 0
  while (b[p]! !== 0) {
    labels.push(b.toString('latin1', p + 1, p + 1 + b[p]!))
    p += 1 + b[p]!
  }
  return labels.join('.')
}

function encode(
  name: string,
  type: string,
  o: { edns?: number; dnssecOk?: boolean; rd?: boolean; cd?: boolean; id?: number },
): Buffer {
  const packet: dnsPacket.Packet = {
    type: 'query',
    id: o.id ?? 0x1234,
    flags: (o.rd === false ? 0 : dnsPacket.RECURSION_DESIRED) | (o.cd ? dnsPacket.CHECKING_DISABLED : 0),
    questions: [{ name, type: type as dnsPacket.RecordType, class: 'IN' }],
  }
  if (o.edns !== undefined) {
    packet.additionals = [
      {
        type: 'OPT',
        name: '.',
        udpPayloadSize: o.edns,
        flags: o.dnssecOk ? dnsPacket.DNSSEC_OK : 0,
      } as dnsPacket.Answer,
    ]
  }
  return dnsPacket.encode(packet)
}

/** Decoded reply with A/AAAA answers in a fixed order (both paths shuffle them). */
function normal(b: Buffer): unknown {
  const d = dnsPacket.decode(b)
  const key = (a: dnsPacket.Answer) => `${a.type} ${JSON.stringify((a as { data?: unknown }).data)}`
  return { ...d, answers: [...(d.answers ?? [])].sort((x, y) => key(x).localeCompare(key(y))) }
}

const upper = (name: string) => name.replace(/[a-z]/g, (c, i: number) => (i % 2 ? c.toUpperCase() : c))

t.test('fast path replies equal the general path', async (t) => {
  const zone = zoneOf()
  const fast = new Resolver(zone)
  const slow = new Resolver(zone, { fast: false })
  fast.setZone(zone)
  slow.setZone(zone)
  const q = new Query()
  const names = [...zone.names.keys()].map(wireToText)
  names.push(
    `nope.${Z}`,
    `a.b.nope.default.svc.${Z}`,
    `web.default.svc.${Z}.default.svc.${Z}`,
    'www.example.org',
    'localhost',
    '7.3.244.10.in-addr.arpa',
    `x${Z}`,
  )
  const types = ['A', 'AAAA', 'SRV', 'TXT', 'PTR', 'CNAME', 'SOA', 'NS', 'ANY', 'MX', 'HTTPS', 'CAA', 'AXFR']
  const variants = [
    {},
    { edns: 1232 },
    { edns: 512, dnssecOk: true },
    { rd: false, cd: true },
    { edns: 4096, cd: true },
  ]
  let answered = 0
  let compared = 0
  const fastTypes = new Set<string>()
  for (const name of names) {
    for (const type of types) {
      for (const v of variants) {
        // Upper case first: the template keeps it, and the lower-case query after it must not see it.
        for (const n of [upper(name), name]) {
          const msg = encode(n, type, { ...v, id: (compared * 7919) & 0xffff })
          const got = fast.fast(msg, false, '127.0.0.1')
          const inZone = name.toLowerCase().endsWith(Z) && !name.startsWith('x')
          if (got === null) continue
          if (!inZone && !name.endsWith('.arpa')) t.fail(`only zone and owned reverse names are answered fast: ${name}`)
          parseQuery(msg, msg.length, q)
          const want = slow.resolve(msg, q, false, '127.0.0.1')
          if (!(want instanceof Buffer)) {
            t.fail(`${n} ${type}: fast answered, general path did not (${String(want)})`)
            continue
          }
          compared++
          if (got.length !== want.length || JSON.stringify(normal(got)) !== JSON.stringify(normal(want))) {
            t.same(normal(got), normal(want), `${n} ${type} ${JSON.stringify(v)}`)
          }
          // Header and question section byte for byte (the question echo keeps the case of the query).
          if (!got.subarray(0, 16 + q.qnameLen).equals(want.subarray(0, 16 + q.qnameLen))) {
            t.fail(`${n} ${type} ${JSON.stringify(v)}: header/question differ`)
          }
          answered++
          fastTypes.add(rcodeOf(dnsPacket.decode(got)))
        }
      }
    }
  }
  t.ok(answered > 1000, `fast path answered ${answered} queries, each equal to the general path`)
  t.same([...fastTypes].sort(), ['NOERROR', 'NXDOMAIN'], 'hits, NODATA and NXDOMAIN take the fast path')
  // The counters move as on the general path.
  t.same([...fast.counts], [...slow.counts], 'the same (type, rcode) counters as the general path')
})

t.test('fast path leaves the general cases alone', async (t) => {
  const zone = zoneOf()
  const r = new Resolver(zone)
  t.equal(
    r.fast(encode(`web.default.svc.${Z}`, 'A', {}), false, '127.0.0.1'),
    null,
    'no fast answer before the first Snapshot',
  )
  r.setZone(zone)
  const hit = encode(`web.default.svc.${Z}`, 'A', {})
  t.not(r.fast(hit, false, '127.0.0.1'), null, 'a hit is fast')
  t.equal(r.fast(encode('www.example.org', 'A', {}), false, '127.0.0.1'), null, 'forwarded name')
  t.equal(r.fast(encode(`ext.default.svc.${Z}`, 'A', {}), false, '127.0.0.1'), null, 'ExternalName chase')
  const badvers = encode(`web.default.svc.${Z}`, 'A', { edns: 1232 })
  badvers[badvers.length - 5] = 1
  t.equal(r.fast(badvers, false, '127.0.0.1'), null, 'EDNS version 1 (BADVERS)')
  const response = Buffer.from(hit)
  response[2] = response[2]! | 0x80
  t.equal(r.fast(response, false, '127.0.0.1'), null, 'QR=1')
  t.equal(r.fast(hit.subarray(0, hit.length - 1), false, '127.0.0.1'), null, 'short question')
  const trailing = Buffer.concat([hit, Buffer.from([0])])
  t.equal(r.fast(trailing, false, '127.0.0.1'), null, 'trailing bytes')
  const srv = r.fast(encode(`_postgres._tcp.db.data.svc.${Z}`, 'SRV', {}), false, '127.0.0.1')
  t.equal(srv?.readUInt16BE(10), 2, 'SRV with its additional addresses is fast')
})

t.test('templates: reused when the socket is idle, copied when a send is queued', async (t) => {
  const zone = zoneOf()
  const r = new Resolver(zone)
  r.setZone(zone)
  const a = r.fast(encode(`web.default.svc.${Z}`, 'A', { id: 1 }), false, '127.0.0.1')!
  const b = r.fast(encode(`web.default.svc.${Z}`, 'A', { id: 2 }), false, '127.0.0.1')!
  t.equal(a, b, 'the same template buffer when idle')
  t.equal(b.readUInt16BE(0), 2)
  const c = r.fast(encode(`web.default.svc.${Z}`, 'A', { id: 3 }), true, '127.0.0.1')!
  t.not(c, b, 'a copy when busy')
  t.equal(b.readUInt16BE(0), 2, 'the queued buffer is untouched')
  t.equal(c.readUInt16BE(0), 3)
  const up = r.fast(encode(`WEB.default.svc.${Z}`, 'A', { id: 4 }), false, '127.0.0.1')!
  t.equal(up.toString('latin1', 13, 16), 'WEB', 'case echoed')
  const low = r.fast(encode(`web.default.svc.${Z}`, 'A', { id: 5 }), false, '127.0.0.1')!
  t.equal(low.toString('latin1', 13, 16), 'web', 'earlier case does not leak')
})
