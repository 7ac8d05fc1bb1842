// Cache poisoning (issue 13 item 7, RFC 5452): a forged reply with the right ID and question, sent from another
// address (127.0.0.2) or another port of the upstream's address before the upstream answers, must not be accepted
// or cached; and every upstream query leaves from a fresh random source port.

import t from 'tap'
import dgram from 'node:dgram'
import { networkInterfaces } from 'node:os'
import dnsPacket from 'dns-packet'
import { adata, decode, query, startPlane, udpRaw, type Teardown } from './helpers.ts'

interface Seen {
  readonly name: string
  readonly id: number
  readonly port: number
}

/**
 * An upstream on 127.0.0.1 that answers A queries with 192.0.2.1 after `delayMs`, and calls `onQuery` with the
 * query's ID and source port first (what an on-path attacker, or a lucky off-path one, knows).
 */
async function slowUpstream(
  t: Teardown,
  delayMs: number,
  onQuery: (q: dnsPacket.DecodedPacket, seen: Seen) => void,
  host = '127.0.0.1',
): Promise<{ port: number; seen: Seen[] }> {
  const socket = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4')
  await new Promise<void>((r) => socket.bind(0, host, () => r()))
  t.teardown(() => socket.close())
  const seen: Seen[] = []
  socket.on('message', (msg, from) => {
    const q = dnsPacket.decode(msg)
    const question = q.questions![0]!
    const s = { name: question.name, id: q.id!, port: from.port }
    seen.push(s)
    onQuery(q, s)
    const reply = dnsPacket.encode({
      type: 'response',
      id: q.id,
      flags: dnsPacket.RECURSION_AVAILABLE | dnsPacket.RECURSION_DESIRED,
      questions: [question],
      answers: [{ name: question.name, type: 'A', ttl: 300, data: '192.0.2.1' }],
    })
    setTimeout(() => socket.send(reply, from.port, from.address), delayMs)
  })
  return { port: socket.address().port, seen }
}

function forged(q: dnsPacket.DecodedPacket): Buffer {
  return dnsPacket.encode({
    type: 'response',
    id: q.id,
    flags: dnsPacket.RECURSION_AVAILABLE | dnsPacket.RECURSION_DESIRED,
    questions: q.questions,
    answers: [{ name: q.questions![0]!.name, type: 'A', ttl: 86400, data: '6.6.6.6' }],
  })
}

t.test('forged replies from another address or port are ignored, not cached', async (t) => {
  // Attackers: one on 127.0.0.2 (the upstream's port when free, else any), one on another port of 127.0.0.1.
  const other = dgram.createSocket('udp4')
  await new Promise<void>((r) => other.bind(0, '127.0.0.2', () => r()))
  const samePort = dgram.createSocket('udp4')
  await new Promise<void>((r) => samePort.bind(0, '127.0.0.1', () => r()))
  t.teardown(() => (other.close(), samePort.close()))
  let forgedSent = 0
  const up = await slowUpstream(t, 300, (q, seen) => {
    const f = forged(q)
    other.send(f, seen.port, '127.0.0.1')
    samePort.send(f, seen.port, '127.0.0.1')
    forgedSent += 2
  })
  const dns = await startPlane(t, { upstreams: [`127.0.0.1:${up.port}`] })
  for (const name of ['bank.example.net', 'shop.example.net']) {
    const r = await udpRaw(dns.port, query(name, 'A'), 4000)
    t.ok(r, `${name} answered`)
    t.same(decode(r!).answers?.map(adata), ['192.0.2.1'], `${name}: the upstream's answer, not the forged one`)
    // From the cache now: still the real answer.
    const again = await udpRaw(dns.port, query(name, 'A', { id: 77 }), 2000)
    t.same(decode(again!).answers?.map(adata), ['192.0.2.1'], `${name}: the cache holds the real answer`)
  }
  t.ok(forgedSent >= 4, `forged replies were sent first (${forgedSent})`)
})

t.test('every upstream query leaves from a fresh source port', async (t) => {
  const up = await slowUpstream(t, 0, () => {})
  const dns = await startPlane(t, { upstreams: [`127.0.0.1:${up.port}`] })
  up.seen.length = 0 // the loop probe
  const n = 12
  for (let i = 0; i < n; i++) {
    const r = await udpRaw(dns.port, query(`n${i}.example.net`, 'A'), 4000)
    t.ok(r, `n${i} answered`)
  }
  const ports = new Set(up.seen.filter((s) => s.name.startsWith('n')).map((s) => s.port))
  // Ephemeral ports are drawn at random from ~28k: a repeat among 12 is rare, four sockets in turn repeat at once.
  t.ok(ports.size >= n - 2, `${ports.size} distinct source ports for ${n} queries`)
  const ids = new Set(up.seen.map((s) => s.id))
  t.ok(ids.size >= n - 2, `${ids.size} distinct IDs`)
})

const hasV6 = Object.values(networkInterfaces()).some((l) => l?.some((a) => a.address === '::1'))

t.test('an IPv6 upstream is answered through an IPv6 socket', { skip: hasV6 ? false : 'no ::1 here' }, async (t) => {
  const up = await slowUpstream(t, 0, () => {}, '::1')
  const dns = await startPlane(t, { upstreams: [`[::1]:${up.port}`] })
  const r = await udpRaw(dns.port, query('v6.example.net', 'A'), 4000)
  t.same(decode(r!).answers?.map(adata), ['192.0.2.1'], "the upstream's answer over IPv6")
})
