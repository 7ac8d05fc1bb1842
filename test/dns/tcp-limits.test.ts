// TCP slowloris (issue 13 item 8, RFC 7766 §6.2.3): a message trickled a byte at a time is cut off at the message
// deadline; a full table of idle connections makes room for a newcomer by closing the oldest idle one; one client
// address cannot hold more than its share.

import t from 'tap'
import net from 'node:net'
import { decode, query, startPlane, tcpRaw } from './helpers.ts'

const Z = 'cluster.local'

interface Conn {
  readonly socket: net.Socket
  closed: boolean
}

/** Opens a TCP connection from `from` (a 127/8 address) and resolves once connected; `closed` follows it. */
function open(port: number, from: string): Promise<Conn> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port, localAddress: from })
    const c: Conn = { socket, closed: false }
    socket.on('close', () => (c.closed = true))
    socket.on('error', () => {})
    socket.once('connect', () => resolve(c))
    socket.once('error', reject)
  })
}

function closeAll(conns: readonly Conn[]): void {
  for (const c of conns) c.socket.destroy()
}

/** One TCP query from `from`; the reply's rcode and answer count, or null when the connection gave nothing. */
async function tcpQuery(port: number, from: string): Promise<{ answers: number } | null> {
  const c = await open(port, from)
  const m = query(`web.default.svc.${Z}`, 'A', { id: 99 })
  const reply = await new Promise<Buffer | null>((resolve) => {
    let buf = Buffer.alloc(0)
    const timer = setTimeout(() => resolve(null), 3000)
    c.socket.on('close', () => (clearTimeout(timer), resolve(null)))
    c.socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk])
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        clearTimeout(timer)
        resolve(buf.subarray(2, 2 + buf.readUInt16BE(0)))
      }
    })
    c.socket.write(Buffer.concat([Buffer.from([m.length >> 8, m.length & 255]), m]))
  })
  c.socket.destroy()
  return reply ? { answers: decode(reply).answers?.length ?? 0 } : null
}

t.test('a message trickled a byte at a time is cut off at the message deadline', async (t) => {
  const dns = await startPlane(t)
  const c = await open(dns.port, '127.0.0.2')
  t.teardown(() => c.socket.destroy())
  const m = query(`web.default.svc.${Z}`, 'A')
  const framed = Buffer.concat([Buffer.from([m.length >> 8, m.length & 255]), m])
  // A byte every 700 ms: well inside the 10 s idle timeout, far too slow for a whole message.
  const started = Date.now()
  let sent = 0
  while (!c.closed && Date.now() - started < 9000 && sent < framed.length - 1) {
    c.socket.write(framed.subarray(sent, sent + 1))
    sent++
    await new Promise((r) => setTimeout(r, 700))
  }
  const took = Date.now() - started
  t.ok(c.closed, `connection closed after ${took} ms and ${sent} bytes`)
  t.ok(took < 7000, 'within the message deadline (3 s) plus the sweep (1 s)')
  // A normal client is unaffected.
  const ok = await tcpRaw(dns.port, [query(`web.default.svc.${Z}`, 'A')])
  t.equal(ok.length, 1)
})

t.test('full table of idle and slow connections: a newcomer still gets an answer', async (t) => {
  const dns = await startPlane(t)
  // 1000 connections (the cap) from ten addresses, 100 each, half of them with a byte of a message sent.
  const attackers: Conn[] = []
  t.teardown(() => closeAll(attackers))
  for (let a = 0; a < 10; a++) {
    const from = `127.0.0.${10 + a}`
    const batch = await Promise.all(Array.from({ length: 100 }, () => open(dns.port, from)))
    batch.forEach((c, i) => i % 2 === 0 && c.socket.write(Buffer.from([0])))
    attackers.push(...batch)
  }
  await new Promise((r) => setTimeout(r, 100))
  const open1 = attackers.filter((c) => !c.closed).length
  t.ok(open1 >= 990, `${open1} slow connections open`)
  for (let i = 0; i < 5; i++) {
    const r = await tcpQuery(dns.port, '127.0.0.1')
    t.same(r, { answers: 1 }, `legitimate TCP query ${i} answered`)
  }
  t.ok(attackers[0]!.closed, 'the oldest idle connection made room')
  const status = dns.plane.status() as { tcpConnections: number }
  t.ok(status.tcpConnections <= 1000, `at most 1000 connections (${status.tcpConnections})`)
})

t.test('per client address: the 101st connection closes that client’s oldest idle one', async (t) => {
  const dns = await startPlane(t)
  const other = await open(dns.port, '127.0.0.3')
  const mine: Conn[] = [other]
  t.teardown(() => closeAll(mine))
  for (let i = 0; i < 100; i++) mine.push(await open(dns.port, '127.0.0.2'))
  await new Promise((r) => setTimeout(r, 100))
  t.notOk(mine[1]!.closed, 'the first 100 are open')
  const r = await tcpQuery(dns.port, '127.0.0.2')
  t.same(r, { answers: 1 }, 'the newcomer is answered')
  const deadline = Date.now() + 2000
  while (!mine[1]!.closed && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20))
  t.ok(mine[1]!.closed, "the client's oldest connection was closed")
  t.notOk(mine[2]!.closed, 'its second oldest is still open')
  t.notOk(other.closed, "another client's connection is untouched")
})
