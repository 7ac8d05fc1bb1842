// A fake "Docker embedded DNS" for tests: answers A records for the names it is told about (every replica, as
// Docker answers a Compose service name), NOERROR with no answers for AAAA of a known name (what Docker does on an
// IPv4-only network), NXDOMAIN for anything else. It can also be told to stay silent (timeouts) or to SERVFAIL.
// UDP only, on the address the test gives (loopback, or a test namespace's bridge address).

import { createSocket, type Socket } from 'node:dgram'
import dnsPacket from 'dns-packet'

export type FakeMode = 'answer' | 'silent' | 'servfail'

export interface FakeDockerDns {
  readonly host: string
  readonly port: number
  /** "host:port" for --discovery-resolver. */
  readonly address: string
  /** Replaces the replicas of a name (lower-cased); an empty list makes the name NXDOMAIN. */
  set(name: string, ips: readonly string[]): void
  mode: FakeMode
  /** Queries seen, "TYPE name", newest last. */
  readonly queries: string[]
  close(): Promise<void>
}

export async function startFakeDockerDns(host = '127.0.0.1', port = 0): Promise<FakeDockerDns> {
  const names = new Map<string, string[]>()
  const queries: string[] = []
  const sock: Socket = createSocket(host.includes(':') ? 'udp6' : 'udp4')
  const api = {
    mode: 'answer' as FakeMode,
  }
  sock.on('message', (msg, rinfo) => {
    let q: dnsPacket.Packet
    try {
      q = dnsPacket.decode(msg)
    } catch {
      return
    }
    const question = q.questions?.[0]
    if (!question) return
    queries.push(`${question.type} ${question.name}`)
    if (queries.length > 10000) queries.splice(0, 5000)
    if (api.mode === 'silent') return
    const name = question.name.toLowerCase().replace(/\.$/, '')
    const ips = names.get(name)
    let rcode = 0 // NOERROR; 3 NXDOMAIN, 2 SERVFAIL
    const answers: dnsPacket.Answer[] = []
    if (api.mode === 'servfail') rcode = 2
    else if (!ips || ips.length === 0) rcode = 3
    else {
      const want = question.type === 'A' ? 4 : question.type === 'AAAA' ? 6 : 0
      for (const ip of ips) {
        const fam = ip.includes(':') ? 6 : 4
        if (fam === want)
          answers.push({ type: fam === 4 ? 'A' : 'AAAA', name: question.name, ttl: 600, class: 'IN', data: ip })
      }
    }
    const out = dnsPacket.encode({
      id: q.id,
      type: 'response',
      // dns-packet encodes the rcode only through the flags' low four bits.
      flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | dnsPacket.AUTHORITATIVE_ANSWER | rcode,
      questions: [question],
      answers,
    })
    sock.send(out, rinfo.port, rinfo.address)
  })
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject)
    sock.bind(port, host, () => resolve())
  })
  const bound = sock.address().port
  return {
    host,
    port: bound,
    address: host.includes(':') ? `[${host}]:${bound}` : `${host}:${bound}`,
    set(name, ips) {
      names.set(name.toLowerCase().replace(/\.$/, ''), [...ips])
    },
    get mode() {
      return api.mode
    },
    set mode(m: FakeMode) {
      api.mode = m
    },
    queries,
    close: () => new Promise<void>((resolve) => sock.close(() => resolve())),
  }
}
