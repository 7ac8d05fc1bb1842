// `npm run bench -- scale`: how meshlet copes with many Services (issue 14). For each size N it writes N Services ×
// 10 EndpointSlice endpoints (addresses on 127.0.0.0/8, never contacted) and an Ingress host per Service, in files of
// 100 Services each, starts a real `meshlet up` on loopback ports and measures:
//   - time from spawn to /readyz 200, RSS and V8 heap after start (RSS from /proc, heap from /metrics);
//   - single-Service edits (one file gains a Service with an Ingress host), readiness flips (a Pod whose readiness
//     probe hits a loopback server the bench toggles: health/ writes the verdict into the Store) and whole-file
//     rewrites (every endpoint of 100 Services moves, plus a marker Service): for each, the time from the write (or
//     the toggle) until DNS answers the change and the Ingress routes it, and the longest DNS and HTTP answer seen
//     meanwhile by a concurrent query loop (one query in flight each, to a name/route that exists throughout);
//   - RSS and heap at the end.
// The floors are not meshlet's: a file change waits for config/'s 100 ms debounce, a flip for the 1 s probe period.
// Flags: --sizes=1000,10000,20000 --edits=50 --flips=50 --rewrites=20 (all bounded; a change not visible in 60 s is
// reported as a timeout); --cpu-prof=DIR writes a V8 CPU profile of each meshlet run into DIR.

import { spawn, type ChildProcess } from 'node:child_process'
import { createSocket, type Socket } from 'node:dgram'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import dnsPacket from 'dns-packet'
import { Agent, request } from 'undici'

const MESHLET = fileURLToPath(new URL('../bin/meshlet.ts', import.meta.url))
const NS = 'bench'
const ZONE = 'cluster.local'
const PER_FILE = 100
const ENDPOINTS = 10
const VISIBLE_TIMEOUT_MS = 60_000
const READY_TIMEOUT_MS = 600_000

function argList(args: string[], name: string, dflt: number[]): number[] {
  const a = args.find((x) => x.startsWith(`--${name}=`))
  return a ? a.split('=')[1]!.split(',').map(Number) : dflt
}

function arg(args: string[], name: string, dflt: number): number {
  return argList(args, name, [dflt])[0]!
}

/** Endpoint j of Service i, shifted by `gen` on rewrites: 127.1.0.0 upwards, one address per endpoint. */
function endpointIp(i: number, j: number, gen: number): string {
  const n = (i * ENDPOINTS + j + gen * 7919) % (200 * 65536)
  return `127.${1 + (n >> 16)}.${(n >> 8) & 255}.${n & 255}`
}

function doc(o: unknown): string {
  return JSON.stringify(o)
}

function serviceDocs(name: string, ips: readonly string[], targetPort: number): string[] {
  return [
    doc({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name, namespace: NS },
      spec: { ports: [{ name: 'http', port: 80, targetPort }] },
    }),
    doc({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `${name}-1`, namespace: NS, labels: { 'kubernetes.io/service-name': name } },
      addressType: 'IPv4',
      ports: [{ name: 'http', port: targetPort, protocol: 'TCP' }],
      endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true } })),
    }),
  ]
}

function ingressDoc(name: string, hosts: readonly { host: string; service: string }[]): string {
  return doc({
    apiVersion: 'networking.k8s.io/v1',
    kind: 'Ingress',
    metadata: { name, namespace: NS },
    spec: {
      ingressClassName: 'meshlet',
      rules: hosts.map(({ host, service }) => ({
        host,
        http: {
          paths: [{ path: '/', pathType: 'Prefix', backend: { service: { name: service, port: { number: 80 } } } }],
        },
      })),
    },
  })
}

interface FileSpec {
  gen: number
  /** Extra Services (edits, rewrite markers) whose only endpoint is the bench's HTTP backend. */
  extra: string[]
}

export function renderFile(f: number, spec: FileSpec, backendPort: number): string {
  const docs: string[] = []
  const hosts: { host: string; service: string }[] = []
  for (let k = 0; k < PER_FILE; k++) {
    const i = f * PER_FILE + k
    const ips = Array.from({ length: ENDPOINTS }, (_, j) => endpointIp(i, j, spec.gen))
    docs.push(...serviceDocs(`svc-${i}`, ips, 8080))
    hosts.push({ host: `svc-${i}.bench.example`, service: `svc-${i}` })
  }
  for (const name of spec.extra) {
    docs.push(...serviceDocs(name, ['127.0.0.1'], backendPort))
    hosts.push({ host: `${name}.bench.example`, service: name })
  }
  docs.push(ingressDoc(`ing-${f}`, hosts))
  return docs.join('\n---\n') + '\n'
}

export function baseFile(backendPort: number, togglePort: number): string {
  return (
    [
      ...serviceDocs('web', ['127.0.0.1'], backendPort),
      ingressDoc('web', [{ host: 'web.bench.example', service: 'web' }]),
      doc({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'flip', namespace: NS, labels: { app: 'flip' } },
        spec: {
          containers: [
            {
              name: 'app',
              ports: [{ name: 'http', containerPort: togglePort }],
              readinessProbe: {
                httpGet: { path: '/ready', port: togglePort },
                periodSeconds: 1,
                timeoutSeconds: 1,
                failureThreshold: 1,
                successThreshold: 1,
              },
            },
          ],
        },
        status: { podIP: '127.0.0.1' },
      }),
      doc({
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'flip', namespace: NS },
        spec: { clusterIP: 'None', selector: { app: 'flip' }, ports: [{ name: 'http', port: 80, targetPort: 'http' }] },
      }),
    ].join('\n---\n') + '\n'
  )
}

// ---- clients -------------------------------------------------------------------------------------------------------

class DnsClient {
  readonly #sock: Socket
  readonly #pending = new Map<number, (msg: dnsPacket.Packet) => void>()
  #id = 0
  readonly host: string
  readonly port: number
  constructor(host: string, port: number) {
    this.host = host
    this.port = port
    this.#sock = createSocket('udp4')
    this.#sock.on('message', (buf) => {
      let p: dnsPacket.Packet
      try {
        p = dnsPacket.decode(buf)
      } catch {
        return
      }
      const r = this.#pending.get(p.id!)
      if (r) {
        this.#pending.delete(p.id!)
        r(p)
      }
    })
    this.#sock.unref()
  }
  /** The A answers of `name`, null on NXDOMAIN/SERVFAIL, 'timeout' after 2 s. */
  async query(name: string): Promise<string[] | null | 'timeout'> {
    const id = (this.#id = (this.#id + 1) & 0xffff)
    const msg = dnsPacket.encode({ type: 'query', id, flags: 0, questions: [{ type: 'A', name }] })
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id)
        resolve('timeout')
      }, 2000)
      this.#pending.set(id, (p) => {
        clearTimeout(timer)
        if ((p as { rcode?: string }).rcode !== 'NOERROR') resolve(null)
        else resolve((p.answers ?? []).flatMap((a) => (a.type === 'A' ? [String(a.data)] : [])))
      })
      this.#sock.send(msg, this.port, this.host)
    })
  }
  close(): void {
    this.#sock.close()
  }
}

async function httpStatus(agent: Agent, port: number, host: string): Promise<number> {
  try {
    const res = await request(`http://127.0.0.1:${port}/`, {
      dispatcher: agent,
      headers: { host },
      headersTimeout: 2000,
      bodyTimeout: 2000,
    })
    await res.body.dump()
    return res.statusCode
  } catch {
    return 0
  }
}

/** Two loops, one request in flight each, recording the longest answer of the current window. */
class Watch {
  dnsMax = 0
  httpMax = 0
  dnsFailures = 0
  httpFailures = 0
  #running = true
  readonly #done: Promise<unknown>
  constructor(dns: DnsClient, agent: Agent, httpPort: number) {
    const dnsLoop = async () => {
      while (this.#running) {
        const t0 = performance.now()
        const r = await dns.query(`web.${NS}.svc.${ZONE}`)
        const dt = performance.now() - t0
        if (r === 'timeout' || r === null || r.length === 0) this.dnsFailures++
        this.dnsMax = Math.max(this.dnsMax, dt)
        await sleep(1)
      }
    }
    const httpLoop = async () => {
      while (this.#running) {
        const t0 = performance.now()
        const code = await httpStatus(agent, httpPort, 'web.bench.example')
        const dt = performance.now() - t0
        if (code !== 200) this.httpFailures++
        this.httpMax = Math.max(this.httpMax, dt)
        await sleep(1)
      }
    }
    this.#done = Promise.all([dnsLoop(), httpLoop()])
  }
  reset(): void {
    this.dnsMax = 0
    this.httpMax = 0
  }
  async stop(): Promise<void> {
    this.#running = false
    await this.#done
  }
}

// ---- meshlet -------------------------------------------------------------------------------------------------------

interface Running {
  proc: ChildProcess
  dns: number
  http: number
  admin: number
  readyMs: number
}

async function startMeshlet(dir: string, profileDir: string | null): Promise<Running> {
  const args = [
    ...(profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []),
    MESHLET,
    'up',
    '-f',
    dir,
    '--dns',
    '127.0.0.1:0',
    '--http',
    '127.0.0.1:0',
    '--https',
    'off',
    '--admin',
    '127.0.0.1:0',
    '--upstream',
    '127.0.0.1:1',
    '--discovery-resolver',
    '127.0.0.1:1',
    '--node',
    'bench',
    '--service-cidr',
    '127.240.0.0/14',
    '--access-log',
    'off',
    '--log-level',
    'info',
    // As root, `auto` would pick nftables and write rules into the host's namespace; the bench measures the
    // userspace listeners, which need no privileges.
    '--l4-mode',
    'userspace',
  ]
  const t0 = performance.now()
  // One listener per ClusterIP: 20,000 Services need more than the usual 1,024 descriptors.
  const proc = spawn('sh', ['-c', 'ulimit -n 65536 2>/dev/null; exec "$@"', 'sh', process.execPath, ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const ports: Record<string, number> = {}
  let buf = ''
  proc.stdout!.setEncoding('utf8').on('data', (c: string) => {
    buf += c
    let i
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i)
      buf = buf.slice(i + 1)
      if (!line.includes('"listening"')) continue
      try {
        const l = JSON.parse(line) as { listener?: string; port?: number }
        if (l.listener && l.port && !(l.listener in ports)) ports[l.listener] = l.port
      } catch {
        // not JSON: ignore
      }
    }
  })
  const deadline = Date.now() + READY_TIMEOUT_MS
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`meshlet exited with ${proc.exitCode}`)
    if (ports.admin) {
      try {
        const res = await fetch(`http://127.0.0.1:${ports.admin}/readyz`)
        await res.arrayBuffer()
        if (res.status === 200) break
      } catch {
        // not yet
      }
    }
    await sleep(20)
  }
  const readyMs = performance.now() - t0
  if (!ports.dns || !ports.http || !ports.admin) throw new Error(`meshlet not ready: ${JSON.stringify(ports)}`)
  return { proc, dns: ports.dns, http: ports.http, admin: ports.admin, readyMs }
}

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Number(m[1]) / 1024 : NaN
}

async function heapMb(adminPort: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text()
  const m = /^meshlet_nodejs_heap_size_used_bytes (\S+)/m.exec(text)
  return m ? Number(m[1]) / 1048576 : NaN
}

async function stopMeshlet(r: Running, profiling: boolean): Promise<void> {
  const exited = new Promise((resolve) => r.proc.once('exit', resolve))
  r.proc.kill('SIGTERM')
  // Writing a CPU profile of a long run takes a while after the drain.
  const timer = setTimeout(() => r.proc.kill('SIGKILL'), profiling ? 120_000 : 15_000)
  await exited
  clearTimeout(timer)
}

// ---- measurement ---------------------------------------------------------------------------------------------------

interface ChangeResult {
  visibleMs: number
  dnsMaxMs: number
  httpMaxMs: number
}

/** Polls until `check` is true (bounded); the watch's maxima cover the same window. */
async function timeUntil(t0: number, watch: Watch, check: () => Promise<boolean>): Promise<ChangeResult> {
  let visible = NaN
  while (performance.now() - t0 < VISIBLE_TIMEOUT_MS) {
    if (await check()) {
      visible = performance.now() - t0
      break
    }
    await sleep(2)
  }
  return { visibleMs: visible, dnsMaxMs: watch.dnsMax, httpMaxMs: watch.httpMax }
}

function dnsHas(dns: DnsClient, name: string, want: (a: string[] | null | 'timeout') => boolean) {
  return async () => want(await dns.query(name))
}

function median(xs: number[]): number {
  const a = xs.filter((x) => !Number.isNaN(x)).sort((x, y) => x - y)
  if (a.length === 0) return NaN
  const mid = Math.floor(a.length / 2)
  return a.length % 2 === 1 ? a[mid]! : (a[mid - 1]! + a[mid]!) / 2
}

function summary(rs: ChangeResult[]): string {
  if (rs.length === 0) return '-'
  const timeouts = rs.filter((r) => Number.isNaN(r.visibleMs)).length
  const vis = rs.map((r) => r.visibleMs)
  const max = (k: keyof ChangeResult) => Math.max(...rs.map((r) => r[k]).filter((x) => !Number.isNaN(x)))
  return (
    `visible median ${median(vis).toFixed(0)} ms, max ${max('visibleMs').toFixed(0)} ms` +
    `${timeouts ? ` (${timeouts} timeouts)` : ''}; longest DNS ${max('dnsMaxMs').toFixed(1)} ms, ` +
    `longest HTTP ${max('httpMaxMs').toFixed(1)} ms`
  )
}

interface SizeResult {
  n: number
  readyMs: number
  rssStart: number
  heapStart: number
  edits: ChangeResult[]
  flips: ChangeResult[]
  rewrites: ChangeResult[]
  rssEnd: number
  heapEnd: number
  failures: string
}

async function runSize(
  n: number,
  counts: { edits: number; flips: number; rewrites: number },
  profileDir: string | null,
): Promise<SizeResult> {
  const dir = mkdtempSync(join(tmpdir(), 'meshlet-scale-'))
  let ready = true
  const backend: Server = createServer((_req, res) => res.end('ok'))
  const toggle: Server = createServer((_req, res) => {
    res.statusCode = ready ? 200 : 503
    res.end()
  })
  await Promise.all([
    new Promise<void>((r) => backend.listen(0, '127.0.0.1', r)),
    new Promise<void>((r) => toggle.listen(0, '127.0.0.1', r)),
  ])
  const backendPort = (backend.address() as { port: number }).port
  const togglePort = (toggle.address() as { port: number }).port
  const files = Math.ceil(n / PER_FILE)
  const specs: FileSpec[] = Array.from({ length: files }, () => ({ gen: 0, extra: [] }))
  const write = (f: number) => writeFileSync(join(dir, `svc-${f}.yaml`), renderFile(f, specs[f]!, backendPort))
  for (let f = 0; f < files; f++) write(f)
  writeFileSync(join(dir, 'base.yaml'), baseFile(backendPort, togglePort))

  const m = await startMeshlet(dir, profileDir)
  const agent = new Agent({ connections: 4 })
  const dns = new DnsClient('127.0.0.1', m.dns)
  let watch: Watch | null = null
  try {
    await sleep(500)
    const rssStart = rssMb(m.proc.pid!)
    const heapStart = await heapMb(m.admin)
    process.stdout.write(
      `  N=${n}: ready ${m.readyMs.toFixed(0)} ms, RSS ${rssStart.toFixed(0)} MB, heap ${heapStart.toFixed(0)} MB\n`,
    )
    watch = new Watch(dns, agent, m.http)
    // The flip Pod starts ready once its first probe passes.
    await timeUntil(performance.now(), watch, async () => {
      const r = await dns.query(`flip.${NS}.svc.${ZONE}`)
      return Array.isArray(r) && r.length > 0
    })

    const edits: ChangeResult[] = []
    for (let k = 0; k < counts.edits; k++) {
      const f = (k * 7) % files
      const name = `edit-${k}`
      specs[f]!.extra.push(name)
      watch.reset()
      const t0 = performance.now()
      write(f)
      edits.push(
        await timeUntil(t0, watch, async () => {
          const r = await dns.query(`${name}.${NS}.svc.${ZONE}`)
          if (!Array.isArray(r) || r.length === 0) return false
          return (await httpStatus(agent, m.http, `${name}.bench.example`)) === 200
        }),
      )
    }
    process.stdout.write(`  N=${n} edits: ${summary(edits)}\n`)

    const flips: ChangeResult[] = []
    for (let k = 0; k < counts.flips; k++) {
      ready = !ready
      const want = ready
      watch.reset()
      const t0 = performance.now()
      flips.push(
        await timeUntil(
          t0,
          watch,
          dnsHas(dns, `flip.${NS}.svc.${ZONE}`, (r) => (want ? Array.isArray(r) && r.length > 0 : r === null)),
        ),
      )
    }
    if (!ready) {
      ready = true
      await sleep(1500)
    }
    process.stdout.write(`  N=${n} flips: ${summary(flips)}\n`)

    const rewrites: ChangeResult[] = []
    for (let k = 0; k < counts.rewrites; k++) {
      const f = (k * 13 + 1) % files
      const name = `rw-${k}`
      specs[f]!.gen++
      specs[f]!.extra.push(name)
      const moved = endpointIp(f * PER_FILE, 0, specs[f]!.gen)
      watch.reset()
      const t0 = performance.now()
      write(f)
      rewrites.push(
        await timeUntil(t0, watch, async () => {
          const r = await dns.query(`${name}.${NS}.svc.${ZONE}`)
          if (!Array.isArray(r) || r.length === 0) return false
          const moved0 = await dns.query(
            `${endpointIp(f * PER_FILE, 0, specs[f]!.gen).replaceAll('.', '-')}.svc-${f * PER_FILE}.${NS}.svc.${ZONE}`,
          )
          if (!Array.isArray(moved0) || !moved0.includes(moved)) return false
          return (await httpStatus(agent, m.http, `${name}.bench.example`)) === 200
        }),
      )
    }
    process.stdout.write(`  N=${n} rewrites: ${summary(rewrites)}\n`)
    await sleep(1000)
    const rssEnd = rssMb(m.proc.pid!)
    const heapEnd = await heapMb(m.admin)
    const failures = `dns ${watch.dnsFailures}, http ${watch.httpFailures}`
    return { n, readyMs: m.readyMs, rssStart, heapStart, edits, flips, rewrites, rssEnd, heapEnd, failures }
  } finally {
    await watch?.stop()
    dns.close()
    await agent.close()
    await stopMeshlet(m, profileDir !== null)
    backend.close()
    toggle.close()
    rmSync(dir, { recursive: true, force: true })
  }
}

export default async function runBench(args: string[]): Promise<void> {
  const sizes = argList(args, 'sizes', [1000, 10000, 20000])
  const counts = { edits: arg(args, 'edits', 50), flips: arg(args, 'flips', 50), rewrites: arg(args, 'rewrites', 20) }
  const results: SizeResult[] = []
  const profileDir = args.find((a) => a.startsWith('--cpu-prof='))?.slice('--cpu-prof='.length) ?? null
  for (const n of sizes) results.push(await runSize(n, counts, profileDir))
  const rows: [string, (r: SizeResult) => string][] = [
    ['start → /readyz 200', (r) => `${(r.readyMs / 1000).toFixed(2)} s`],
    ['RSS / heap after start', (r) => `${r.rssStart.toFixed(0)} / ${r.heapStart.toFixed(0)} MB`],
    [`${counts.edits} single-Service edits`, (r) => summary(r.edits)],
    [`${counts.flips} readiness flips`, (r) => summary(r.flips)],
    [`${counts.rewrites} whole-file rewrites`, (r) => summary(r.rewrites)],
    ['RSS / heap at the end', (r) => `${r.rssEnd.toFixed(0)} / ${r.heapEnd.toFixed(0)} MB`],
    ['failed watch queries', (r) => r.failures],
  ]
  process.stdout.write(`\n| | ${results.map((r) => `${r.n.toLocaleString('en')} Services`).join(' | ')} |\n`)
  process.stdout.write(`|---|${results.map(() => '---|').join('')}\n`)
  for (const [label, f] of rows) process.stdout.write(`| ${label} | ${results.map(f).join(' | ')} |\n`)
}
