// `npm run bench -- dns`: dnsperf against meshlet's DNS plane, dnsmasq and unbound serving the same 1,000 Service
// names, in one run. Server pinned to CPU 0, dnsperf to CPU 1 (taskset). Four mixes: all hits; 50 % in-zone NXDOMAIN
// (the ndots:5 search walk); forwarded names answered from cache; hits over TCP. For each: max queries/s, server CPU
// µs per query (from /proc/PID/stat), p99 latency at a fixed 5,000 queries/s (dnsperf -v), lost queries; with
// meshlet's ratio to each peer. Bounded: about 2 minutes.
//
// meshlet runs as a child process of this file (`--child`): the DNS plane fed by a Store, as `meshlet up` runs it,
// without the other planes.

import { spawn, execFile, execFileSync, type ChildProcess } from 'node:child_process'
import { promisify } from 'node:util'
import dgram from 'node:dgram'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'

const SELF = fileURLToPath(import.meta.url)
const N = 1000
const MAX_SECONDS = 4
const FIXED_SECONDS = 2
const FIXED_QPS = 5000
const CLK_TCK = 100

const svcName = (i: number) => `svc-${i}.bench.svc.cluster.local`
const svcIp = (i: number) => `10.96.${Math.floor(i / 250)}.${(i % 250) + 1}`
const extName = (i: number) => `host-${i}.example.net`
const extIp = (i: number) => `192.0.${2 + Math.floor(i / 250)}.${(i % 250) + 1}`

function manifests(): string {
  const docs: string[] = []
  for (let i = 0; i < N; i++) {
    docs.push(
      `apiVersion: v1\nkind: Service\nmetadata: { name: svc-${i}, namespace: bench }\nspec:\n  clusterIP: ${svcIp(i)}\n  ports: [{ port: 80 }]\n`,
    )
  }
  return docs.join('---\n')
}

// ---------------------------------------------------------------- child: meshlet's DNS plane

async function child(port: number, upstream: number, workers: number): Promise<void> {
  const { pino } = await import('pino')
  const { Registry } = await import('prom-client')
  const { loadManifestText } = await import('../config/load.ts')
  const { Store } = await import('../model/store.ts')
  const { parseCidr } = await import('../model/ip.ts')
  const { noopReporter } = await import('../model/snapshot.ts')
  const { startDns } = await import('../dns/index.ts')
  const store = new Store({ nodeName: 'bench', serviceCidrs: [parseCidr('10.96.0.0/16')!] })
  const loaded = loadManifestText(manifests(), 'bench.yaml')
  store.setObjects(loaded.objects, loaded.errors)
  store.flush()
  const plane = await startDns({
    store,
    log: pino({ level: 'warn' }),
    metrics: new Registry(),
    reporter: noopReporter,
    options: {
      files: [],
      nodeName: 'bench',
      nodeAddress: null,
      dns: { host: '127.0.0.1', port },
      http: null,
      https: null,
      admin: null,
      upstreams: [`127.0.0.1:${upstream}`],
      clusterDomain: 'cluster.local',
      serviceCidrs: [],
      vipMode: 'none',
      vipInterface: null,
      dnsTtl: 5,
      dnsWorkers: workers,
      ingressClass: 'meshlet',
      accessLog: false,
      trustForwardedFrom: [],
      execPrefix: null,
      onLivenessFailure: null,
      logLevel: 'warn',
    },
  })
  while (!plane.ready()) await sleep(20)
  // Exit through process.exit so --cpu-prof can write its profile.
  process.on('SIGTERM', () => process.exit(0))
  process.stdout.write('ready\n')
}

if (process.argv[2] === '--child') {
  await child(Number(process.argv[3]), Number(process.argv[4]), Number(process.argv[5] ?? 1))
}

// ---------------------------------------------------------------- parent

interface Server {
  readonly name: string
  readonly port: number
  readonly proc: ChildProcess
}

/**
 * A port free for both UDP and TCP on 127.0.0.1: the servers bind both with the same number, and a port the kernel
 * gave UDP may be held by a TCP socket (EADDRINUSE at start).
 */
async function freePort(): Promise<number> {
  const net = await import('node:net')
  for (let attempt = 0; attempt < 50; attempt++) {
    const s = dgram.createSocket('udp4')
    await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()))
    const p = s.address().port
    const tcp = net.createServer()
    const free = await new Promise<boolean>((r) => {
      tcp.once('error', () => r(false))
      tcp.listen(p, '127.0.0.1', () => r(true))
    })
    if (free) await new Promise<void>((r) => tcp.close(() => r()))
    await new Promise<void>((r) => s.close(() => r()))
    if (free) return p
  }
  throw new Error('no port free for both UDP and TCP')
}

/** A fake upstream for example.net answering every name with one A record (TTL 3600), in this process. */
async function upstream(): Promise<{ port: number; close(): void }> {
  const { default: dnsPacket } = await import('dns-packet')
  const s = dgram.createSocket('udp4')
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()))
  s.on('message', (msg, rinfo) => {
    try {
      const q = dnsPacket.decode(msg)
      const question = q.questions![0]!
      const i = Number(/host-(\d+)/.exec(question.name)?.[1] ?? 0)
      const answers =
        question.type === 'A' ? [{ name: question.name, type: 'A' as const, ttl: 3600, data: extIp(i) }] : []
      s.send(
        dnsPacket.encode({
          type: 'response',
          id: q.id,
          flags: dnsPacket.RECURSION_AVAILABLE,
          questions: [question],
          answers,
        }),
        rinfo.port,
        rinfo.address,
      )
    } catch {
      // ignore
    }
  })
  return { port: s.address().port, close: () => s.close() }
}

async function waitUdp(port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    try {
      const out = execFileSync(
        'dig',
        ['@127.0.0.1', '-p', String(port), 'svc-0.bench.svc.cluster.local', 'A', '+time=1', '+tries=1', '+short'],
        { stdio: 'pipe' },
      ).toString()
      if (out.trim() === svcIp(0)) return
    } catch {
      // not yet
    }
    await sleep(100)
  }
  throw new Error(`server on ${port} did not answer`)
}

async function startMeshlet(dir: string, up: number): Promise<Server> {
  const port = await freePort()
  const proc = spawn('taskset', ['-c', '0', process.execPath, SELF, '--child', String(port), String(up), '1'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  await waitUdp(port)
  void dir
  return { name: 'meshlet', port, proc }
}

/**
 * --dns-workers 2. Two threads on one core would only measure the hand-over, so this row gets both cores, shared
 * with dnsperf (which stays on CPU 1): compare its CPU µs/query, and its q/s as what two cores give.
 */
async function startMeshlet2(dir: string, up: number): Promise<Server> {
  const port = await freePort()
  const proc = spawn('taskset', ['-c', '0,1', process.execPath, SELF, '--child', String(port), String(up), '2'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  await waitUdp(port)
  void dir
  return { name: 'meshlet-2w', port, proc }
}

async function startDnsmasq(dir: string, up: number): Promise<Server> {
  const port = await freePort()
  const hosts = join(dir, 'hosts')
  writeFileSync(hosts, Array.from({ length: N }, (_, i) => `${svcIp(i)} ${svcName(i)}`).join('\n') + '\n')
  const proc = spawn(
    'taskset',
    [
      '-c',
      '0',
      'dnsmasq',
      '--keep-in-foreground',
      '--conf-file=/dev/null',
      `--port=${port}`,
      '--listen-address=127.0.0.1',
      '--bind-interfaces',
      '--no-resolv',
      '--no-hosts',
      `--addn-hosts=${hosts}`,
      '--local=/cluster.local/',
      `--server=127.0.0.1#${up}`,
      '--cache-size=10000',
      '--user=root',
      '--pid-file=',
      '--log-facility=/dev/null',
      '--local-ttl=5',
      '--dns-forward-max=1000',
    ],
    { stdio: ['ignore', 'ignore', 'ignore'] },
  )
  await waitUdp(port)
  return { name: 'dnsmasq', port, proc }
}

async function startUnbound(dir: string, up: number): Promise<Server> {
  const port = await freePort()
  const conf = join(dir, 'unbound.conf')
  const local = Array.from({ length: N }, (_, i) => `  local-data: "${svcName(i)}. 5 IN A ${svcIp(i)}"`).join('\n')
  writeFileSync(
    conf,
    `server:
  interface: 127.0.0.1
  port: ${port}
  do-daemonize: no
  chroot: ""
  username: ""
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 0
  num-threads: 1
  do-ip6: no
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: no
  module-config: "iterator"
  msg-cache-size: 16m
  rrset-cache-size: 16m
  incoming-num-tcp: 100
  local-zone: "cluster.local." static
${local}
forward-zone:
  name: "."
  forward-addr: 127.0.0.1@${up}
`,
  )
  const proc = spawn('taskset', ['-c', '0', 'unbound', '-d', '-c', conf], { stdio: ['ignore', 'ignore', 'ignore'] })
  await waitUdp(port)
  return { name: 'unbound', port, proc }
}

function cpuTicks(pid: number): number {
  // Fields 14 and 15 (utime, stime) after the ")" of the command name; children included via the process group is
  // not needed: each server is one process here (dnsmasq forks for TCP, counted through cutime/cstime).
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])
}

/** The real server process (taskset execs it, so the pid is the server's). */
interface Result {
  qps: number
  cpuUsPerQuery: number
  p99ms: number
  /** Lost at the fixed 5,000 queries/s. */
  lost: number
  /** Lost while saturated (max rate, 500 outstanding): UDP drops under overload. */
  saturatedLost: number
}

const execFileAsync = promisify(execFile)

/** Asynchronous, so the fake upstream in this process keeps answering while dnsperf runs. */
async function dnsperf(args: string[]): Promise<string> {
  const { stdout } = await execFileAsync('taskset', ['-c', '1', 'dnsperf', '-s', '127.0.0.1', '-t', '2', ...args], {
    maxBuffer: 256 * 1024 * 1024,
  })
  return stdout
}

async function measure(server: Server, file: string, tcp: boolean): Promise<Result> {
  const mode = tcp ? ['-m', 'tcp', '-c', '20'] : ['-c', '4']
  const pid = server.proc.pid!
  const before = cpuTicks(pid)
  const out = await dnsperf([
    '-p',
    String(server.port),
    '-d',
    file,
    '-l',
    String(MAX_SECONDS),
    '-q',
    tcp ? '200' : '500',
    ...mode,
  ])
  const after = cpuTicks(pid)
  const completed = Number(/Queries completed:\s+(\d+)/.exec(out)?.[1] ?? 0)
  const lost = Number(/Queries lost:\s+(\d+)/.exec(out)?.[1] ?? 0)
  const qps = Number(/Queries per second:\s+([\d.]+)/.exec(out)?.[1] ?? 0)
  const cpuUs = ((after - before) / CLK_TCK) * 1e6
  // p99 at a fixed rate, from dnsperf -v: one line per query ending with its latency in seconds.
  const v = await dnsperf([
    '-p',
    String(server.port),
    '-d',
    file,
    '-l',
    String(FIXED_SECONDS),
    '-Q',
    String(FIXED_QPS),
    '-v',
    ...mode,
  ])
  const lat: number[] = []
  for (const line of v.split('\n')) {
    const m = /^> \S+ .* ([\d.]+)$/.exec(line)
    if (m) lat.push(Number(m[1]))
  }
  lat.sort((a, b) => a - b)
  const p99 = lat.length ? lat[Math.min(lat.length - 1, Math.floor(lat.length * 0.99))]! * 1000 : NaN
  const fixedLost = Number(/Queries lost:\s+(\d+)/.exec(v)?.[1] ?? 0)
  return { qps, cpuUsPerQuery: completed ? cpuUs / completed : NaN, p99ms: p99, lost: fixedLost, saturatedLost: lost }
}

export default async function run(_args: string[]): Promise<void> {
  const started = Date.now()
  const dir = mkdtempSync(join(tmpdir(), 'meshlet-bench-dns-'))
  const files = {
    hits: join(dir, 'hits.txt'),
    nxdomain: join(dir, 'nxdomain.txt'),
    cache: join(dir, 'cache.txt'),
  }
  writeFileSync(files.hits, Array.from({ length: N }, (_, i) => `${svcName(i)} A`).join('\n') + '\n')
  writeFileSync(
    files.nxdomain,
    Array.from({ length: N }, (_, i) =>
      i % 2 ? `${svcName(i)} A` : `svc-${i}.bench.svc.cluster.local.default.svc.cluster.local A`,
    ).join('\n') + '\n',
  )
  writeFileSync(files.cache, Array.from({ length: N }, (_, i) => `${extName(i)} A`).join('\n') + '\n')
  const up = await upstream()
  const mixes = [
    { name: 'hits (UDP)', file: files.hits, tcp: false },
    { name: '50% NXDOMAIN (UDP)', file: files.nxdomain, tcp: false },
    { name: 'forwarded, cached (UDP)', file: files.cache, tcp: false },
    { name: 'hits (TCP)', file: files.hits, tcp: true },
  ]
  const results = new Map<string, Map<string, Result>>()
  for (const start of [startMeshlet, startMeshlet2, startDnsmasq, startUnbound]) {
    let server: Server | null = null
    try {
      server = await start(dir, up.port)
      // Warm the caches of forwarded names.
      await dnsperf(['-p', String(server.port), '-d', files.cache, '-n', '1', '-c', '1', '-q', '50'])
      const byMix = new Map<string, Result>()
      for (const mix of mixes) byMix.set(mix.name, await measure(server, mix.file, mix.tcp))
      results.set(server.name, byMix)
    } catch (err) {
      process.stdout.write(`${start.name}: ${(err as Error).message}\n`)
    } finally {
      server?.proc.kill('SIGTERM')
      await sleep(200)
    }
  }
  up.close()
  rmSync(dir, { recursive: true, force: true })

  const pad = (s: string, n: number) => s.padEnd(n)
  const num = (x: number, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : '-')
  process.stdout.write(
    `\n${pad('mix', 26)}${pad('server', 12)}${pad('qps', 10)}${pad('cpu µs/q', 10)}${pad('p99 ms@5k', 11)}${pad('lost@5k', 8)}${pad('lost@max', 9)}${pad('×dnsmasq', 10)}×unbound\n`,
  )
  for (const mix of mixes) {
    const peers = { dnsmasq: results.get('dnsmasq')?.get(mix.name), unbound: results.get('unbound')?.get(mix.name) }
    for (const [name, byMix] of results) {
      const r = byMix.get(mix.name)!
      const ratio = (p: Result | undefined) => (p && name.startsWith('meshlet') ? (r.qps / p.qps).toFixed(2) : '')
      process.stdout.write(
        `${pad(mix.name, 26)}${pad(name, 12)}${pad(num(r.qps), 10)}${pad(num(r.cpuUsPerQuery, 1), 10)}${pad(num(r.p99ms, 3), 11)}${pad(String(r.lost), 8)}${pad(String(r.saturatedLost), 9)}${pad(ratio(peers.dnsmasq), 10)}${ratio(peers.unbound)}\n`,
      )
    }
  }
  process.stdout.write(
    `\n(${((Date.now() - started) / 1000).toFixed(0)} s; servers on CPU 0, meshlet-2w on CPUs 0-1, dnsperf on CPU 1)\n`,
  )
}
