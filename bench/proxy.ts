// L7 benchmark (issue 16): meshlet's Ingress router against nginx, HAProxy and node-http-proxy, all in the same run,
// in front of the same Node backend (13-byte answer), HTTP/1.1 keep-alive, wrk with 1 thread and 50 connections
// (wrk: cheaper per request than autocannon, which narrows gaps). Backends and proxies on loopback only.
//
// Two sections, every target started once per section and measured in alternating rounds:
//   pinned    backend and proxy on CPU 0, wrk on CPU 1 (specs/perf-anchors.md): one core's worth. Targets: the backend
//             direct, nginx worker_processes 1, HAProxy nbthread 1, meshlet --workers 1, node-http-proxy (when
//             node_modules has http-proxy).
//   unpinned  everything shares the machine: nginx worker_processes 1 and auto, HAProxy nbthread 1 and 2, meshlet
//             --workers 1 and --workers N (N = os.availableParallelism()).
// nginx and HAProxy set the request headers ingress-nginx's template sets (X-Request-ID, X-Real-IP, X-Forwarded-*,
// X-Scheme), as meshlet does, so every proxy makes the backend parse the same request.
//
// Each (target, round) is one wrk run with the foreign-CPU check of bench/_cpu.ts: CPU time used meanwhile by
// processes other than the target (with its descendants and threads), the backend and wrk counts as foreign; above
// FOREIGN_LIMIT the run is repeated (up to RERUNS times, while the time budget lasts) and the least disturbed run kept;
// rows with a kept run still disturbed carry '*'.
//
// What the table reports, a fixed rule: req/s and CPU µs/request are the medians over the rounds; p99 is the p99 of
// the median round (the round whose req/s is the median; with an even count the lower of the middle two), not a median
// of p99s from different rounds, so a row's p99 and req/s come from one run. Ratios are meshlet's req/s (and p99, and
// CPU per request) over each peer's, within a section. CPU µs/request: user+system time of the proxy process (nginx:
// master and workers; meshlet and HAProxy: every thread) over the requests wrk completed.
//
// Bounded: about 3-5 minutes (--duration seconds per run, --rounds per section, reruns stop at --budget seconds).
//
//   npm run bench -- proxy [--duration=4] [--rounds=3] [--connections=50] [--budget=300] [--quick]
//   node bench/proxy.ts --serve-meshlet BACKEND_PORT [WORKERS]     (internal: the meshlet child process)

import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { CLK_TCK, cpuWindow, FOREIGN_LIMIT, leastDisturbed, RERUNS } from './_cpu.ts'

const SELF = fileURLToPath(import.meta.url)
const ROOT = fileURLToPath(new URL('..', import.meta.url))
const NODE = process.execPath
const BACKEND_SRC = `
const http = require('node:http');
const s = http.createServer((req, res) => { res.writeHead(200, {'content-type': 'text/plain'}); res.end('hello world!\\n') });
s.keepAliveTimeout = 65000;
s.listen(0, '127.0.0.1', () => console.log('READY ' + s.address().port));
`
const HTTP_PROXY_DIR = join(ROOT, 'node_modules/http-proxy')
const HTTP_PROXY_SRC = `
const http = require('node:http');
const httpProxy = require(${JSON.stringify(HTTP_PROXY_DIR)});
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
const proxy = httpProxy.createProxyServer({ target: 'http://127.0.0.1:' + process.argv[1], agent, xfwd: true });
proxy.on('error', (e, req, res) => { res.writeHead(502); res.end() });
const s = http.createServer((req, res) => proxy.web(req, res));
s.keepAliveTimeout = 65000;
s.listen(0, '127.0.0.1', () => console.log('READY ' + s.address().port));
`

// ---------------------------------------------------------------- the meshlet child

/** One Service (the backend on 127.0.0.1), its Pod, one Ingress for every path: what `meshlet up -f` would load. */
const manifests = (backendPort: number) => `apiVersion: v1
kind: Service
metadata: { name: backend, namespace: default }
spec:
  selector: { app: backend }
  ports: [{ name: http, port: 80, targetPort: ${backendPort} }]
---
apiVersion: v1
kind: Pod
metadata: { name: backend-1, namespace: default, labels: { app: backend } }
spec:
  nodeName: bench
  containers: [{ name: c, ports: [{ name: http, containerPort: ${backendPort} }] }]
status: { podIP: 127.0.0.1, podIPs: [{ ip: 127.0.0.1 }] }
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: { name: bench, namespace: default }
spec:
  ingressClassName: meshlet
  rules:
  - http:
      paths:
      - { path: /, pathType: Prefix, backend: { service: { name: backend, port: { number: 80 } } } }
`

/** The proxy plane as `meshlet up` runs it (startProxy, fed by a Store), without the other planes. */
async function serveMeshlet(backendPort: number, workers: number): Promise<void> {
  // A clean exit on SIGINT/SIGTERM so --cpu-prof can write its profile.
  process.on('SIGINT', () => process.exit(0))
  process.on('SIGTERM', () => process.exit(0))
  const { pino, destination } = await import('pino')
  const { Registry } = await import('prom-client')
  const { loadManifestText } = await import('../config/load.ts')
  const { Store } = await import('../model/store.ts')
  const { noopReporter } = await import('../model/snapshot.ts')
  const { startProxy } = await import('../proxy/index.ts')
  const { testRuntimeOptions } = await import('../test/helpers/options.ts')
  const store = new Store({ nodeName: 'bench', serviceCidrs: [] })
  const loaded = loadManifestText(manifests(backendPort), 'bench.yaml')
  store.setObjects(loaded.objects, loaded.errors)
  store.flush()
  const plane = await startProxy({
    store,
    options: testRuntimeOptions({
      nodeName: 'bench',
      http: { host: '127.0.0.1', port: 0 },
      accessLog: process.env.MESHLET_BENCH_ACCESS_LOG === 'on',
      logLevel: 'warn',
      proxyWorkers: workers,
    }),
    log: pino({ level: 'warn' }, destination(2)),
    metrics: new Registry(),
    reporter: noopReporter,
  })
  for (let i = 0; i < 200 && !plane.ready(); i++) await sleep(50)
  const port = (plane.status() as { listeners: { http: { port: number } } }).listeners.http.port
  console.log(`READY ${port}`)
}

// ---------------------------------------------------------------- harness

interface Proc {
  readonly proc: ChildProcess
  readonly port: number
}

function pinned(cpus: string | null, cmd: string[]): string[] {
  return cpus === null ? cmd : ['taskset', '-c', cpus, ...cmd]
}

async function startProc(cmd: string[], t: Set<ChildProcess>): Promise<Proc> {
  const proc = spawn(cmd[0]!, cmd.slice(1), { stdio: ['ignore', 'pipe', 'inherit'], detached: false })
  t.add(proc)
  const port = await new Promise<number>((resolve, reject) => {
    let buf = ''
    const timer = setTimeout(() => reject(new Error(`${cmd.join(' ')}: not ready in 30 s`)), 30000)
    proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
      buf += d
      const m = /READY (\d+)/.exec(buf)
      if (m) {
        clearTimeout(timer)
        resolve(Number(m[1]))
      }
    })
    proc.once('exit', (code) => reject(new Error(`${cmd.join(' ')} exited ${code}`)))
  })
  return { proc, port }
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port
      s.close(() => resolve(p))
    })
  })
}

/** Polls GET / until a 200 (nginx and HAProxy print nothing when ready). */
async function waitHttp(port: number, what: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/`)
      await res.text()
      if (res.ok) return
    } catch {
      // not up yet
    }
    await sleep(50)
  }
  throw new Error(`${what} did not start`)
}

async function startNginx(
  backendPort: number,
  workers: string,
  cpus: string | null,
  dir: string,
  t: Set<ChildProcess>,
  ingressHeaders: boolean,
): Promise<Proc> {
  const port = await freePort()
  const headers = ingressHeaders
    ? `
      proxy_set_header X-Request-ID $request_id;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header X-Forwarded-Port $server_port;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Scheme $scheme;
      proxy_set_header X-Scheme $scheme;
      add_header X-Request-ID $request_id;`
    : `
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Real-IP $remote_addr;`
  const conf = `
worker_processes ${workers};
daemon off;
master_process on;
user root;
pid ${dir}/nginx-${port}.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/cb; proxy_temp_path ${dir}/pt; fastcgi_temp_path ${dir}/ft; uwsgi_temp_path ${dir}/ut; scgi_temp_path ${dir}/st;
  keepalive_requests 100000;
  upstream backend { server 127.0.0.1:${backendPort}; keepalive 64; keepalive_requests 100000; }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;${headers}
    }
  }
}
`
  const file = join(dir, `nginx-${port}.conf`)
  writeFileSync(file, process.getuid?.() === 0 ? conf : conf.replace('user root;\n', ''))
  const cmd = pinned(cpus, ['nginx', '-p', dir, '-c', file])
  const proc = spawn(cmd[0]!, cmd.slice(1), { stdio: 'ignore' })
  t.add(proc)
  await waitHttp(port, `nginx (see ${dir}/error.log)`)
  return { proc, port }
}

/** HAProxy in `mode http`, `threads` threads, server-side keep-alive, the same request headers as nginx's. */
async function startHaproxy(
  backendPort: number,
  threads: number,
  cpus: string | null,
  dir: string,
  t: Set<ChildProcess>,
): Promise<Proc> {
  const port = await freePort()
  const conf = `
global
  nbthread ${threads}
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 75s
  timeout server 75s
  timeout http-keep-alive 75s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:${port}
  unique-id-format %[uuid()]
  http-request set-header X-Request-ID %[unique-id]
  http-request set-header X-Real-IP %[src]
  http-request set-header X-Forwarded-For %[src]
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header X-Forwarded-Port %[dst_port]
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Scheme http
  http-request set-header X-Scheme http
  http-response set-header X-Request-ID %[unique-id]
  default_backend be
backend be
  server s1 127.0.0.1:${backendPort}
`
  const file = join(dir, `haproxy-${port}.cfg`)
  writeFileSync(file, conf)
  const cmd = pinned(cpus, ['haproxy', '-db', '-f', file])
  const proc = spawn(cmd[0]!, cmd.slice(1), { stdio: 'ignore' })
  t.add(proc)
  await waitHttp(port, 'haproxy')
  return { proc, port }
}

interface Run {
  rps: number
  p99ms: number
  cpuUsPerReq: number
  /** Share of the machine's CPU other processes used during the run (bench/_cpu.ts). */
  foreign: number
  /** wrk runs it took (reruns of a disturbed one). */
  runs: number
}

function parseWrkLatency(s: string): number {
  const m = /([\d.]+)(us|ms|s)/.exec(s)
  if (!m) return NaN
  const v = Number(m[1])
  return m[2] === 'us' ? v / 1000 : m[2] === 's' ? v * 1000 : v
}

/** One wrk run against `port`, with the CPU of `target` (and its descendants) and the foreign share. */
function wrk(
  port: number,
  seconds: number,
  connections: number,
  loadCpus: string | null,
  target: number,
  backend: number,
): Promise<Omit<Run, 'runs'>> {
  const cmd = pinned(loadCpus, [
    'wrk',
    '-t1',
    `-c${connections}`,
    `-d${seconds}s`,
    '--latency',
    `http://127.0.0.1:${port}/`,
  ])
  // The backend is a child of this process too: listed on its own, as the target's descendants are in its tree.
  const end = cpuWindow(target === backend ? [target, 'self'] : [target, backend, 'self'])
  const out = execFileSync(cmd[0]!, cmd.slice(1), { encoding: 'utf8', timeout: (seconds + 20) * 1000 })
  const w = end()
  const total = Number(/(\d+) requests in/.exec(out)?.[1])
  const errors = /Non-2xx or 3xx responses: (\d+)|Socket errors: .*/.exec(out)
  if (errors) process.stderr.write(`  wrk: ${errors[0]}\n`)
  return Promise.resolve({
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]),
    p99ms: parseWrkLatency(/99%\s+(\S+)/.exec(out)?.[1] ?? ''),
    cpuUsPerReq: total > 0 ? ((w.ticks[0]! / CLK_TCK) * 1e6) / total : NaN,
    foreign: w.foreign,
  })
}

function arg(args: string[], name: string, dflt: number): number {
  const a = args.find((x) => x.startsWith(`--${name}=`))
  return a ? Number(a.split('=')[1]) : dflt
}

/** The reported run of a row: the median round by req/s (the lower middle one for an even count). */
function medianRound(runs: readonly Run[]): Run {
  const sorted = [...runs].sort((a, b) => a.rps - b.rps)
  return sorted[Math.floor((sorted.length - 1) / 2)]!
}

function median(xs: readonly number[]): number {
  const a = [...xs].sort((x, y) => x - y)
  return a[Math.floor((a.length - 1) / 2)]!
}

interface Row {
  readonly section: 'pinned' | 'unpinned'
  readonly target: string
  readonly runs: Run[]
}

export default async function run(args: string[]): Promise<void> {
  const started = performance.now()
  const quick = args.includes('--quick')
  const seconds = arg(args, 'duration', quick ? 2 : 4)
  const rounds = arg(args, 'rounds', quick ? 1 : 3)
  const connections = arg(args, 'connections', 50)
  const budget = arg(args, 'budget', quick ? 60 : 300)
  const mayRerun = () => (performance.now() - started) / 1000 < budget
  const nWorkers = Math.max(2, availableParallelism())
  const procs = new Set<ChildProcess>()
  const dir = mkdtempSync(join(tmpdir(), 'meshlet-bench-proxy-'))
  const has = (bin: string) => existsSync(`/usr/sbin/${bin}`) || existsSync(`/usr/bin/${bin}`)
  const rows: Row[] = []
  const section = async (name: Row['section'], cpus: string | null, loadCpus: string | null, backend: Proc) => {
    const targets: [string, () => Promise<Proc>][] = []
    if (name === 'pinned') targets.push(['direct', () => Promise.resolve(backend)])
    if (has('nginx')) {
      targets.push(['nginx-w1', () => startNginx(backend.port, '1', cpus, dir, procs, true)])
      if (name === 'unpinned')
        targets.push(['nginx-auto', () => startNginx(backend.port, 'auto', cpus, dir, procs, true)])
    }
    if (has('haproxy')) {
      targets.push(['haproxy-t1', () => startHaproxy(backend.port, 1, cpus, dir, procs)])
      if (name === 'unpinned')
        targets.push([`haproxy-t${nWorkers}`, () => startHaproxy(backend.port, nWorkers, cpus, dir, procs)])
    }
    const meshlet = (w: number) =>
      startProc(pinned(cpus, [NODE, SELF, '--serve-meshlet', String(backend.port), String(w)]), procs)
    targets.push(['meshlet-1w', () => meshlet(1)])
    if (name === 'unpinned') targets.push([`meshlet-${nWorkers}w`, () => meshlet(nWorkers)])
    if (name === 'pinned' && existsSync(HTTP_PROXY_DIR))
      targets.push([
        'node-http-proxy',
        () => startProc(pinned(cpus, [NODE, '--no-deprecation', '-e', HTTP_PROXY_SRC, String(backend.port)]), procs),
      ])
    const up: [string, Proc][] = []
    for (const [target, start] of targets) {
      try {
        const p = await start()
        // Warm-up: JIT, connection pools.
        await wrk(p.port, 1, connections, loadCpus, p.proc.pid!, backend.proc.pid!)
        up.push([target, p])
        rows.push({ section: name, target, runs: [] })
      } catch (err) {
        process.stdout.write(`  ${name} ${target}: ${(err as Error).message}\n`)
      }
    }
    for (let round = 1; round <= rounds; round++) {
      for (const [target, p] of up) {
        const r = await leastDisturbed(
          () => wrk(p.port, seconds, connections, loadCpus, p.proc.pid!, backend.proc.pid!),
          mayRerun,
        )
        rows.find((x) => x.section === name && x.target === target)!.runs.push(r)
        process.stdout.write(
          `  ${name.padEnd(9)} round ${round} ${target.padEnd(16)} ${r.rps.toFixed(0).padStart(7)} req/s  p99 ${r.p99ms.toFixed(2)} ms  cpu ${r.cpuUsPerReq.toFixed(1)} µs/req  foreign ${(r.foreign * 100).toFixed(0)}%${r.runs > 1 ? ` (${r.runs} runs)` : ''}\n`,
        )
      }
    }
    for (const [, p] of up) if (p !== backend) p.proc.kill('SIGTERM')
    await sleep(300)
  }
  try {
    const backendPinned = await startProc(pinned('0', [NODE, '-e', BACKEND_SRC]), procs)
    await section('pinned', '0', '1', backendPinned)
    backendPinned.proc.kill('SIGTERM')
    if (!quick) {
      const backend = await startProc([NODE, '-e', BACKEND_SRC], procs)
      await section('unpinned', null, null, backend)
    }
  } finally {
    for (const p of procs) p.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  }
  report(rows, { seconds, rounds, connections, nWorkers, elapsed: (performance.now() - started) / 1000 })
}

function report(
  rows: readonly Row[],
  o: { seconds: number; rounds: number; connections: number; nWorkers: number; elapsed: number },
): void {
  const summary = (r: Row) => {
    const m = medianRound(r.runs)
    return {
      rps: median(r.runs.map((x) => x.rps)),
      p99ms: m.p99ms,
      cpu: median(r.runs.map((x) => x.cpuUsPerReq)),
      foreign: m.foreign,
      disturbed: r.runs.some((x) => x.foreign > FOREIGN_LIMIT),
    }
  }
  const find = (section: string, target: string) => {
    const r = rows.find((x) => x.section === section && x.target === target && x.runs.length > 0)
    return r ? summary(r) : undefined
  }
  process.stdout.write(
    `\n${o.rounds} round(s) × ${o.seconds} s per target, wrk -t1 -c${o.connections}, keep-alive; req/s and CPU: medians; ` +
      `p99: of the median round; '*': a kept run had more than ${FOREIGN_LIMIT * 100}% foreign CPU after up to ${RERUNS} reruns\n`,
  )
  process.stdout.write(
    `| section | target | req/s | p99 ms | CPU µs/req | foreign (median round) | × direct |\n|---|---|---:|---:|---:|---:|---:|\n`,
  )
  for (const r of rows) {
    if (r.runs.length === 0) continue
    const s = summary(r)
    const direct = find(r.section, 'direct')
    process.stdout.write(
      `| ${r.section} | ${r.target}${s.disturbed ? '*' : ''} | ${s.rps.toFixed(0)} | ${s.p99ms.toFixed(2)} | ${s.cpu.toFixed(1)} | ${(s.foreign * 100).toFixed(0)}% | ${direct ? (s.rps / direct.rps).toFixed(2) : '—'} |\n`,
    )
  }
  const ratios: [string, string, string][] = [
    ['pinned', 'meshlet-1w', 'nginx-w1'],
    ['pinned', 'meshlet-1w', 'haproxy-t1'],
    ['pinned', 'meshlet-1w', 'node-http-proxy'],
    ['unpinned', 'meshlet-1w', 'nginx-w1'],
    ['unpinned', `meshlet-${o.nWorkers}w`, 'nginx-auto'],
    ['unpinned', `meshlet-${o.nWorkers}w`, `haproxy-t${o.nWorkers}`],
    ['unpinned', `meshlet-${o.nWorkers}w`, 'nginx-w1'],
  ]
  process.stdout.write(`\n| section | ratio | req/s × | p99 × | CPU/req × |\n|---|---|---:|---:|---:|\n`)
  for (const [section, a, b] of ratios) {
    const x = find(section, a)
    const y = find(section, b)
    if (!x || !y) continue
    const mark = x.disturbed || y.disturbed ? '*' : ''
    process.stdout.write(
      `| ${section} | ${a} ÷ ${b}${mark} | ${(x.rps / y.rps).toFixed(2)} | ${(x.p99ms / y.p99ms).toFixed(2)} | ${(x.cpu / y.cpu).toFixed(2)} |\n`,
    )
  }
  process.stdout.write(`\n(${o.elapsed.toFixed(0)} s in all)\n`)
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  if (process.argv[2] === '--serve-meshlet') await serveMeshlet(Number(process.argv[3]), Number(process.argv[4] ?? 1))
  else await run(process.argv.slice(2))
}
