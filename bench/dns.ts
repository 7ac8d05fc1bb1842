// `npm run bench -- dns`: dnsperf against meshlet's DNS plane (1 thread and --dns-workers 2), dnsmasq and unbound
// serving the same 1,000 Service names and forwarding to the same fake upstream on loopback, all started once and
// measured mix by mix in turn, so the ratios of one mix come from minutes close together. Servers pinned to CPU 0
// (meshlet-2w to CPUs 0-1), dnsperf to CPU 1 (taskset). Mixes: in-zone hits; 50 % in-zone NXDOMAIN; forwarded
// names served from the cache (1,000 outside names repeated); the ndots:5 walk of an outside name (3 NXDOMAIN + 1
// cached forward per lookup); hits over TCP. For each: max queries/s, server CPU µs per query (/proc/PID/stat), p99
// latency at a fixed 5,000 queries/s (dnsperf -v), lost queries; meshlet's ratio to each peer.
//
// The machine may be shared: the foreign-CPU check of bench/_cpu.ts (CPU time that is neither the server's nor this
// process's, with dnsperf its child, above FOREIGN_LIMIT: run again up to RERUNS times, the least disturbed run kept;
// rows still disturbed carry a '*'). Bounded: about 4 minutes.
//
// meshlet runs as a child process of this file (`--child`): the DNS plane fed by a Store, as `meshlet up` runs it,
// without the other planes.

import { spawn, execFile, execFileSync, type ChildProcess } from 'node:child_process'
import { promisify } from 'node:util'
import dgram from 'node:dgram'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { CLK_TCK, cpuWindow, disturbedMark, FOREIGN_LIMIT, leastDisturbed, RERUNS } from './_cpu.ts'

const SELF = fileURLToPath(import.meta.url)
const N = 1000
const MAX_SECONDS = 4
const FIXED_SECONDS = 2
const FIXED_QPS = 5000
const BASE = process.env.DNS_BENCH_BASE ?? ''

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
  const { testRuntimeOptions } = await import('../test/helpers/options.ts')
  const store = new Store({ nodeName: 'bench', serviceCidrs: [parseCidr('10.96.0.0/16')!] })
  const loaded = loadManifestText(manifests(), 'bench.yaml')
  store.setObjects(loaded.objects, loaded.errors)
  store.flush()
  const plane = await startDns({
    store,
    log: pino({ level: 'warn' }),
    metrics: new Registry(),
    reporter: noopReporter,
    options: testRuntimeOptions({
      nodeName: 'bench',
      dns: { host: '127.0.0.1', port },
      upstreams: [`127.0.0.1:${upstream}`],
      dnsWorkers: workers,
      logLevel: 'warn',
    }),
  })
  while (!plane.ready()) await sleep(20)
  // Exit through process.exit so --cpu-prof can write its profile.
  process.on('SIGTERM', () => process.exit(0))
  // Port 0: the listener binds UDP and TCP on one number itself (retrying when TCP cannot have it) and says which.
  const st = plane.status() as { listeners: { port: number }[] }
  process.stdout.write(`ready ${st.listeners[0]!.port}\n`)
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
 * A port free for both UDP and TCP on 127.0.0.1 (for dnsmasq and unbound, which take a number): a port the kernel
 * gave UDP may be held by a TCP socket. Still a race with the rest of the machine, so `startWithRetry` tries again.
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

async function waitUdp(port: number, proc: ChildProcess): Promise<void> {
  for (let i = 0; i < 100 && proc.exitCode === null; i++) {
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
  proc.kill('SIGKILL')
  throw new Error(`server on ${port} did not answer`)
}

/** A peer on a port of its own choosing, retried on a new port when it cannot bind (a busy machine). */
async function startWithRetry(name: string, spawnOn: (port: number) => ChildProcess): Promise<Server> {
  let last: unknown = null
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort()
    const proc = spawnOn(port)
    try {
      await waitUdp(port, proc)
      return { name, port, proc }
    } catch (err) {
      last = err
    }
  }
  throw last
}

/**
 * meshlet on port 0: it binds UDP and TCP on one number itself and prints it. `workers` 2: two threads on one core
 * would only measure the hand-over, so that row gets both cores, shared with dnsperf (which stays on CPU 1): compare
 * its CPU µs/query, and its q/s as what two cores give.
 */
async function startMeshlet(up: number, workers: number, self = SELF): Promise<Server> {
  const cpus = workers > 1 ? '0,1' : '0'
  const proc = spawn('taskset', ['-c', cpus, process.execPath, self, '--child', '0', String(up), String(workers)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const port = await new Promise<number>((resolve, reject) => {
    let text = ''
    const timer = setTimeout(() => reject(new Error('meshlet did not start in 30 s')), 30_000)
    proc.stdout!.on('data', (c: Buffer) => {
      text += c.toString()
      const m = /ready (\d+)/.exec(text)
      if (m) {
        clearTimeout(timer)
        resolve(Number(m[1]))
      }
    })
    proc.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`meshlet exited with ${code}`))
    })
  })
  await waitUdp(port, proc)
  return { name: self !== SELF ? 'meshlet-base' : workers > 1 ? 'meshlet-2w' : 'meshlet', port, proc }
}

function startDnsmasq(dir: string, up: number): Promise<Server> {
  const hosts = join(dir, 'hosts')
  writeFileSync(hosts, Array.from({ length: N }, (_, i) => `${svcIp(i)} ${svcName(i)}`).join('\n') + '\n')
  return startWithRetry('dnsmasq', (port) =>
    spawn(
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
    ),
  )
}

function startUnbound(dir: string, up: number): Promise<Server> {
  const local = Array.from({ length: N }, (_, i) => `  local-data: "${svcName(i)}. 5 IN A ${svcIp(i)}"`).join('\n')
  return startWithRetry('unbound', (port) => {
    const conf = join(dir, `unbound-${port}.conf`)
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
    return spawn('taskset', ['-c', '0', 'unbound', '-d', '-c', conf], { stdio: ['ignore', 'ignore', 'ignore'] })
  })
}

interface Result {
  qps: number
  cpuUsPerQuery: number
  p99ms: number
  /** Lost at the fixed 5,000 queries/s. */
  lost: number
  /** Lost while saturated (max rate, 500 outstanding): UDP drops under overload. */
  saturatedLost: number
  /** Share of the two CPUs used by other processes during the saturated run. */
  foreign: number
}

const execFileAsync = promisify(execFile)

/** Asynchronous, so the fake upstream in this process keeps answering while dnsperf runs. */
async function dnsperf(args: string[]): Promise<string> {
  const { stdout } = await execFileAsync('taskset', ['-c', '1', 'dnsperf', '-s', '127.0.0.1', '-t', '2', ...args], {
    maxBuffer: 256 * 1024 * 1024,
  })
  return stdout
}

async function measureOnce(server: Server, file: string, tcp: boolean): Promise<Result> {
  const mode = tcp ? ['-m', 'tcp', '-c', '20'] : ['-c', '4']
  const end = cpuWindow([server.proc.pid!, 'self'])
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
  const {
    ticks: [serverTicks],
    foreign,
  } = end()
  const completed = Number(/Queries completed:\s+(\d+)/.exec(out)?.[1] ?? 0)
  const lost = Number(/Queries lost:\s+(\d+)/.exec(out)?.[1] ?? 0)
  const qps = Number(/Queries per second:\s+([\d.]+)/.exec(out)?.[1] ?? 0)
  const cpuUs = (serverTicks! / CLK_TCK) * 1e6
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
  return {
    qps,
    cpuUsPerQuery: completed ? cpuUs / completed : NaN,
    p99ms: p99,
    lost: fixedLost,
    saturatedLost: lost,
    foreign,
  }
}

/** Measured again while other processes took more than FOREIGN_LIMIT of the CPUs; the least disturbed run kept. */
function measure(server: Server, file: string, tcp: boolean): Promise<Result> {
  return leastDisturbed(() => measureOnce(server, file, tcp))
}

export default async function run(_args: string[]): Promise<void> {
  const started = Date.now()
  const dir = mkdtempSync(join(tmpdir(), 'meshlet-bench-dns-'))
  const files = {
    hits: join(dir, 'hits.txt'),
    nxdomain: join(dir, 'nxdomain.txt'),
    cache: join(dir, 'cache.txt'),
    ndots: join(dir, 'ndots.txt'),
  }
  const lines = (f: (i: number) => string) => Array.from({ length: N }, (_, i) => f(i)).join('\n') + '\n'
  writeFileSync(
    files.hits,
    lines((i) => `${svcName(i)} A`),
  )
  writeFileSync(
    files.nxdomain,
    lines((i) => (i % 2 ? `${svcName(i)} A` : `svc-${i}.bench.svc.cluster.local.default.svc.cluster.local A`)),
  )
  writeFileSync(
    files.cache,
    lines((i) => `${extName(i)} A`),
  )
  // glibc with ndots:5 in namespace bench: the search list first, then the name as given.
  writeFileSync(
    files.ndots,
    lines((i) =>
      [
        `${extName(i)}.bench.svc.cluster.local A`,
        `${extName(i)}.svc.cluster.local A`,
        `${extName(i)}.cluster.local A`,
        `${extName(i)} A`,
      ].join('\n'),
    ),
  )
  const up = await upstream()
  const mixes = [
    { name: 'hits (UDP)', file: files.hits, tcp: false },
    { name: '50% NXDOMAIN (UDP)', file: files.nxdomain, tcp: false },
    { name: 'forwarded, cached (UDP)', file: files.cache, tcp: false },
    { name: 'ndots:5 walk (UDP)', file: files.ndots, tcp: false },
    { name: 'hits (TCP)', file: files.hits, tcp: true },
  ]
  const servers: Server[] = []
  const starts: [string, () => Promise<Server>][] = [
    ['meshlet', () => startMeshlet(up.port, 1)],
    ['meshlet-2w', () => startMeshlet(up.port, 2)],
  ]
  // DNS_BENCH_BASE=<checkout of another commit>: its meshlet (1 thread) measured in the same run, for before/after.
  if (BASE) starts.push(['meshlet-base', () => startMeshlet(up.port, 1, join(BASE, 'bench/dns.ts'))])
  starts.push(['dnsmasq', () => startDnsmasq(dir, up.port)], ['unbound', () => startUnbound(dir, up.port)])
  for (const [name, start] of starts) {
    try {
      const server = await start()
      // Warm the caches of forwarded names.
      await dnsperf(['-p', String(server.port), '-d', files.cache, '-n', '1', '-c', '1', '-q', '50'])
      servers.push(server)
    } catch (err) {
      process.stdout.write(`${name}: ${(err as Error).message}\n`)
    }
  }
  const results = new Map<string, Map<string, Result>>()
  try {
    for (const mix of mixes) {
      for (const server of servers) {
        try {
          const r = await measure(server, mix.file, mix.tcp)
          let byMix = results.get(server.name)
          if (!byMix) results.set(server.name, (byMix = new Map()))
          byMix.set(mix.name, r)
        } catch (err) {
          process.stdout.write(`${server.name} ${mix.name}: ${(err as Error).message}\n`)
        }
      }
    }
  } finally {
    for (const s of servers) s.proc.kill('SIGTERM')
    await sleep(300)
    up.close()
    rmSync(dir, { recursive: true, force: true })
  }

  const pad = (s: string, n: number) => s.padEnd(n)
  const num = (x: number, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : '-')
  process.stdout.write(
    `\n${pad('mix', 26)}${pad('server', 12)}${pad('qps', 10)}${pad('cpu µs/q', 10)}${pad('p99 ms@5k', 11)}${pad('lost@5k', 8)}${pad('lost@max', 9)}${pad('foreign', 9)}${pad('×dnsmasq', 10)}${pad('×unbound', 10)}cpu×dnsmasq\n`,
  )
  for (const mix of mixes) {
    const peers = { dnsmasq: results.get('dnsmasq')?.get(mix.name), unbound: results.get('unbound')?.get(mix.name) }
    for (const [name, byMix] of results) {
      const r = byMix.get(mix.name)
      if (!r) continue
      const ratio = (p: Result | undefined) => (p && name.startsWith('meshlet') ? (r.qps / p.qps).toFixed(2) : '')
      // CPU per query against dnsmasq's: steadier than q/s when other processes take the CPUs.
      const cpuRatio = (p: Result | undefined) =>
        p && name.startsWith('meshlet') ? (r.cpuUsPerQuery / p.cpuUsPerQuery).toFixed(2) : ''
      const mark = disturbedMark(r.foreign)
      process.stdout.write(
        `${pad(mix.name, 26)}${pad(name + mark, 12)}${pad(num(r.qps), 10)}${pad(num(r.cpuUsPerQuery, 1), 10)}${pad(num(r.p99ms, 3), 11)}${pad(String(r.lost), 8)}${pad(String(r.saturatedLost), 9)}${pad(`${num(r.foreign * 100)}%`, 9)}${pad(ratio(peers.dnsmasq), 10)}${pad(ratio(peers.unbound), 10)}${cpuRatio(peers.dnsmasq)}\n`,
      )
    }
  }
  process.stdout.write(
    `\n(${((Date.now() - started) / 1000).toFixed(0)} s; servers on CPU 0, meshlet-2w on CPUs 0-1, dnsperf on CPU 1; ` +
      `foreign: other processes' share of the 2 CPUs, '*' above ${FOREIGN_LIMIT * 100}% after ${RERUNS} reruns)\n`,
  )
}
