// Test helpers for the DNS plane: an in-process plane on 127.0.0.1 port 0 fed by a real Store from YAML manifests,
// a fake upstream (UDP + TCP, dns-packet) that records every question it gets, dig as the client, and a raw
// dns-packet client for byte-level checks.

import dgram from 'node:dgram'
import net from 'node:net'
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import dnsPacket from 'dns-packet'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { loadManifestText } from '../../config/load.ts'
import { Store } from '../../model/store.ts'
import { parseCidr } from '../../model/ip.ts'
import { noopReporter } from '../../model/snapshot.ts'
import { testRuntimeOptions } from '../helpers/options.ts'
import type { Plane } from '../../model/plane.ts'
import { startDns } from '../../dns/index.ts'

const run = promisify(execFile)

export interface Teardown {
  teardown(fn: () => unknown): void
}

export const FIXTURE = readFileSync(fileURLToPath(new URL('../fixtures/dns/cluster.yaml', import.meta.url)), 'utf8')

export function objectsOf(yaml: string) {
  const loaded = loadManifestText(yaml, 'test.yaml')
  if (loaded.errors.length > 0) throw new Error(JSON.stringify(loaded.errors))
  return loaded.objects
}

export interface DnsPlane {
  readonly port: number
  readonly host: string
  readonly plane: Plane
  readonly store: Store
  readonly metrics: Registry
  /** Replaces the configuration with these manifests; resolves once the plane (every worker) serves it. */
  setYaml(yaml: string): Promise<void>
  /** Worker threads (--dns-workers); 1 = the main thread. */
  readonly workers: number
}

/** DNS_TEST_WORKERS=N runs every test file's planes with --dns-workers N (test/dns/workers.test.ts uses it). */
export const TEST_WORKERS = Number(process.env.DNS_TEST_WORKERS ?? 1)

export async function startPlane(
  t: Teardown,
  opts: {
    yaml?: string | null
    upstreams?: string[]
    ttl?: number
    host?: string
    port?: number
    zone?: string
    workers?: number
  } = {},
): Promise<DnsPlane> {
  const store = new Store({
    nodeName: 'test-node',
    serviceCidrs: [parseCidr('10.96.0.0/16')!, parseCidr('fd00:96::/112')!],
  })
  const metrics = new Registry()
  const options = testRuntimeOptions({
    dns: { host: opts.host ?? '127.0.0.1', port: opts.port ?? 0 },
    upstreams: opts.upstreams ?? ['127.0.0.1:1'],
    clusterDomain: opts.zone ?? 'cluster.local',
    dnsTtl: opts.ttl ?? 5,
    dnsWorkers: opts.workers ?? TEST_WORKERS,
  })
  const log = pino({ level: process.env.DNS_TEST_LOG ?? 'silent' })
  const plane = await startDns({ store, options, log, metrics, reporter: noopReporter })
  t.teardown(() => plane.close(Date.now() + 1000))
  const status = plane.status() as { listeners: { address: string; port: number }[]; workers: unknown[] | null }
  const workers = opts.workers ?? TEST_WORKERS
  if ((status.workers?.length ?? 1) !== workers)
    throw new Error(`dns plane runs ${status.workers?.length ?? 1} workers, wanted ${workers}`)
  const setYaml = async (yaml: string) => {
    store.setObjects(objectsOf(yaml), [])
    store.flush()
    const version = store.current!.version
    // Workers apply Snapshots asynchronously (postMessage); the main thread at once.
    const applied = await eventually(
      () => plane.ready() && (plane.status() as { snapshotVersion: number }).snapshotVersion >= version,
      10000,
      5,
    )
    if (!applied) throw new Error(`dns plane did not apply snapshot ${version}`)
  }
  if (opts.yaml !== null) await setYaml(opts.yaml ?? FIXTURE)
  return {
    port: status.listeners[0]!.port,
    host: status.listeners[0]!.address,
    plane,
    store,
    metrics,
    setYaml,
    workers,
  }
}

// ---------------------------------------------------------------- dig

export interface DigRR {
  readonly name: string
  readonly ttl: number
  readonly type: string
  readonly data: string
}

export interface DigResult {
  readonly status: string
  readonly flags: readonly string[]
  readonly answer: readonly DigRR[]
  readonly authority: readonly DigRR[]
  readonly additional: readonly DigRR[]
  readonly raw: string
}

function parseRR(line: string): DigRR {
  const [name, ttl, , type, ...rest] = line.split(/\s+/)
  return { name: name!, ttl: Number(ttl), type: type!, data: rest.join(' ') }
}

export async function dig(
  port: number,
  name: string,
  type = 'A',
  extra: string[] = [],
  host = '127.0.0.1',
): Promise<DigResult> {
  const { stdout } = await run('dig', [
    `@${host}`,
    '-p',
    String(port),
    name,
    type,
    '+time=4',
    '+tries=1',
    '+nocookie',
    '+noidnin',
    '+noidnout',
    ...extra,
  ])
  const status = /status: (\w+)/.exec(stdout)?.[1] ?? 'NONE'
  const flags = (/;; flags: ([^;]*);/.exec(stdout)?.[1] ?? '').trim().split(/\s+/).filter(Boolean)
  const sections: Record<string, DigRR[]> = { ANSWER: [], AUTHORITY: [], ADDITIONAL: [] }
  let current: DigRR[] | null = null
  for (const line of stdout.split('\n')) {
    const m = /^;; (ANSWER|AUTHORITY|ADDITIONAL) SECTION:/.exec(line)
    if (m) {
      current = sections[m[1]!]!
      continue
    }
    if (line.trim() === '' || line.startsWith(';')) {
      if (line.trim() === '') current = null
      continue
    }
    if (current) current.push(parseRR(line))
  }
  return {
    status,
    flags,
    answer: sections.ANSWER!,
    authority: sections.AUTHORITY!,
    additional: sections.ADDITIONAL!,
    raw: stdout,
  }
}

/** Sorted answer data of one type, for order-free comparison. */
export function datas(r: DigResult, type: string): string[] {
  return r.answer
    .filter((a) => a.type === type)
    .map((a) => a.data.toLowerCase())
    .sort()
}

// ---------------------------------------------------------------- raw client

/** Sends raw bytes over UDP and resolves with the reply (or null after `timeoutMs`). */
export function udpRaw(port: number, msg: Buffer, timeoutMs = 2000, host = '127.0.0.1'): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const s = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4')
    const timer = setTimeout(() => (s.close(), resolve(null)), timeoutMs)
    s.on('message', (m) => {
      clearTimeout(timer)
      s.close()
      resolve(m)
    })
    s.send(msg, port, host)
  })
}

/** Sends several framed messages on one TCP connection and collects `expect` replies. */
export function tcpRaw(
  port: number,
  msgs: Buffer[],
  expect = msgs.length,
  timeoutMs = 3000,
  host = '127.0.0.1',
): Promise<Buffer[]> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port })
    const out: Buffer[] = []
    let buf = Buffer.alloc(0)
    const done = () => {
      clearTimeout(timer)
      s.destroy()
      resolve(out)
    }
    const timer = setTimeout(done, timeoutMs)
    s.on('error', done)
    s.on('connect', () => {
      for (const m of msgs) {
        const len = Buffer.alloc(2)
        len.writeUInt16BE(m.length)
        s.write(Buffer.concat([len, m]))
      }
    })
    s.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c])
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const n = buf.readUInt16BE(0)
        out.push(buf.subarray(2, 2 + n))
        buf = buf.subarray(2 + n)
      }
      if (out.length >= expect) done()
    })
  })
}

export function query(
  name: string,
  type: string,
  opts: { id?: number; edns?: number; rd?: boolean; dnssecOk?: boolean } = {},
): Buffer {
  const packet: dnsPacket.Packet = {
    type: 'query',
    id: opts.id ?? 4242,
    flags: opts.rd === false ? 0 : dnsPacket.RECURSION_DESIRED,
    questions: [{ name, type: type as dnsPacket.RecordType, class: 'IN' }],
  }
  if (opts.edns !== undefined) {
    packet.additionals = [
      {
        type: 'OPT',
        name: '.',
        udpPayloadSize: opts.edns,
        flags: opts.dnssecOk ? dnsPacket.DNSSEC_OK : 0,
      } as dnsPacket.Answer,
    ]
  }
  return dnsPacket.encode(packet)
}

export function decode(buf: Buffer): dnsPacket.DecodedPacket {
  return dnsPacket.decode(buf)
}

// ---------------------------------------------------------------- fake upstream

export interface SeenQuery {
  readonly name: string
  readonly type: string
  readonly transport: 'udp' | 'tcp'
}

export type UpstreamHandler = (q: { name: string; type: string; transport: 'udp' | 'tcp' }) => {
  rcode?: string
  answers?: dnsPacket.Answer[]
  authorities?: dnsPacket.Answer[]
  tc?: boolean
  drop?: boolean
  delayMs?: number
} | null

export interface FakeUpstream {
  readonly port: number
  readonly address: string
  readonly seen: SeenQuery[]
  handler: UpstreamHandler
}

const SOA = (zone: string): dnsPacket.Answer => ({
  name: zone,
  type: 'SOA',
  ttl: 60,
  data: {
    mname: `ns.${zone}`,
    rname: `hostmaster.${zone}`,
    serial: 1,
    refresh: 3600,
    retry: 600,
    expire: 86400,
    minimum: 30,
  },
})

/** Default behaviour: A/AAAA for *.example.org and example.org, NXDOMAIN with the example.org SOA otherwise. */
export const defaultHandler: UpstreamHandler = (q) => {
  const n = q.name.toLowerCase()
  if (n === 'example.org' || n.endsWith('.example.org')) {
    if (n.startsWith('missing.')) return { rcode: 'NXDOMAIN', authorities: [SOA('example.org')] }
    if (q.type === 'A') return { answers: [{ name: q.name, type: 'A', ttl: 300, data: '192.0.2.1' }] }
    if (q.type === 'AAAA') return { answers: [{ name: q.name, type: 'AAAA', ttl: 300, data: '2001:db8::1' }] }
    return { authorities: [SOA('example.org')] }
  }
  return { rcode: 'NXDOMAIN', authorities: [SOA('.')] }
}

/** A fake upstream on 127.0.0.1 (UDP + TCP on one port) that records every question it receives. */
export async function fakeUpstream(t: Teardown, handler: UpstreamHandler = defaultHandler): Promise<FakeUpstream> {
  // UDP first, then TCP on the port the kernel chose; another port when TCP cannot have it.
  let udp!: dgram.Socket
  let tcp!: net.Server
  let port = 0
  for (let attempt = 0; attempt < 20 && port === 0; attempt++) {
    udp = dgram.createSocket('udp4')
    await new Promise<void>((r) => udp.bind(0, '127.0.0.1', () => r()))
    const candidate = udp.address().port
    tcp = net.createServer((s) => onTcp(s))
    const ok = await new Promise<boolean>((r) => {
      tcp.once('error', () => r(false))
      tcp.listen(candidate, '127.0.0.1', () => r(true))
    })
    if (ok) port = candidate
    else udp.close()
  }
  const self: FakeUpstream = { port, address: '127.0.0.1', seen: [], handler }
  const answer = (msg: Buffer, transport: 'udp' | 'tcp', send: (b: Buffer) => void) => {
    let q: dnsPacket.DecodedPacket
    try {
      q = dnsPacket.decode(msg)
    } catch {
      return
    }
    const question = q.questions?.[0]
    if (!question) return
    self.seen.push({ name: question.name, type: question.type, transport })
    const r = self.handler({ name: question.name, type: question.type, transport })
    if (!r || r.drop) return
    const reply = dnsPacket.encode({
      type: 'response',
      id: q.id,
      flags: (r.tc ? dnsPacket.TRUNCATED_RESPONSE : 0) | dnsPacket.RECURSION_AVAILABLE | dnsPacket.RECURSION_DESIRED,
      rcode: r.rcode ?? 'NOERROR',
      questions: [question],
      answers: r.tc && transport === 'udp' ? [] : (r.answers ?? []),
      authorities: r.authorities ?? [],
    } as dnsPacket.Packet)
    // dns-packet writes the rcode only through flags.
    const rcodes: Record<string, number> = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, REFUSED: 5 }
    reply[3] = (reply[3]! & 0xf0) | (rcodes[r.rcode ?? 'NOERROR'] ?? 0)
    if (r.delayMs) setTimeout(() => send(reply), r.delayMs)
    else send(reply)
  }
  udp.on('message', (msg, rinfo) => answer(msg, 'udp', (b) => udp.send(b, rinfo.port, rinfo.address)))
  function onTcp(s: net.Socket): void {
    let buf = Buffer.alloc(0)
    s.on('error', () => {})
    s.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c])
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const m = buf.subarray(2, 2 + buf.readUInt16BE(0))
        buf = buf.subarray(2 + m.length)
        answer(m, 'tcp', (b) => {
          const len = Buffer.alloc(2)
          len.writeUInt16BE(b.length)
          if (!s.destroyed) s.write(Buffer.concat([len, b]))
        })
      }
    })
  }
  t.teardown(async () => {
    udp.close()
    await new Promise<void>((r) => tcp.close(() => r()))
  })
  return self
}

/** Polls `fn` until it returns true (generous deadline for a loaded 2-core machine). */
export async function eventually(
  fn: () => Promise<boolean> | boolean,
  timeoutMs = 5000,
  stepMs = 20,
): Promise<boolean> {
  const until = Date.now() + timeoutMs
  while (Date.now() < until) {
    if (await fn()) return true
    await new Promise((r) => setTimeout(r, stepMs))
  }
  return false
}

/** The data of a decoded answer (dns-packet's types leave it out of the union). */
export function adata(a: dnsPacket.Answer): string {
  return String((a as { data?: unknown }).data)
}

export function rcodeOf(d: dnsPacket.DecodedPacket): string {
  return (d as unknown as { rcode: string }).rcode
}
