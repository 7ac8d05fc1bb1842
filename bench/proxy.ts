// L7 benchmark: meshlet's Ingress router against nginx (worker_processes 1, upstream keepalive) and node-http-proxy,
// same Node backend (13-byte answer), HTTP/1.1 keep-alive, 50 connections. Pinned like specs/perf-anchors.md:
// backend and proxy on CPU 0, the load generator on CPU 1. wrk is the main tool (cheaper per request than
// autocannon, which narrows gaps); autocannon is run too. A last unpinned section shows what a second meshlet worker
// process adds. Every run is bounded (default 8 s each, about 2.5 minutes in all).
//
//   npm run bench -- proxy [--duration=8] [--connections=50] [--quick]
//   node bench/proxy.ts --serve-meshlet BACKEND_PORT [WORKERS]     (internal: the meshlet child process)

import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'

const SELF = fileURLToPath(import.meta.url)
const ROOT = fileURLToPath(new URL('..', import.meta.url))
const NODE = process.execPath
const BACKEND_SRC = `
const http = require('node:http');
const s = http.createServer((req, res) => { res.writeHead(200, {'content-type': 'text/plain'}); res.end('hello world!\\n') });
s.keepAliveTimeout = 65000;
s.listen(0, '127.0.0.1', () => console.log('READY ' + s.address().port));
`
const HTTP_PROXY_SRC = `
const http = require('node:http');
const httpProxy = require(${JSON.stringify(join(ROOT, 'node_modules/http-proxy'))});
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
const proxy = httpProxy.createProxyServer({ target: 'http://127.0.0.1:' + process.argv[1], agent, xfwd: true });
proxy.on('error', (e, req, res) => { res.writeHead(502); res.end() });
const s = http.createServer((req, res) => proxy.web(req, res));
s.keepAliveTimeout = 65000;
s.listen(0, '127.0.0.1', () => console.log('READY ' + s.address().port));
`

// ---------------------------------------------------------------- the meshlet child

async function serveMeshlet(backendPort: number, workers: number): Promise<void> {
  // A clean exit on SIGINT/SIGTERM so --cpu-prof can write its profile.
  process.on('SIGINT', () => process.exit(0))
  process.on('SIGTERM', () => process.exit(0))
  const cluster = (await import('node:cluster')).default
  if (workers > 1 && cluster.isPrimary) {
    cluster.schedulingPolicy = cluster.SCHED_NONE // the kernel spreads connections; no hop through the primary
    let port = 0
    for (let i = 0; i < workers; i++) {
      const w = cluster.fork()
      w.on('message', (m: { port: number }) => {
        if (port === 0) {
          port = m.port
          console.log(`READY ${port}`)
        }
      })
    }
    return
  }
  const { Store } = await import('../model/store.ts')
  const { noopReporter } = await import('../model/snapshot.ts')
  const { startProxy } = await import('../proxy/index.ts')
  const { pino } = await import('pino')
  const { Registry } = await import('prom-client')
  const meta = (name: string, labels: Record<string, string> = {}) => ({ name, namespace: 'default', labels, annotations: {}, deletionTimestamp: null, source: { file: 'bench', doc: 1 } })
  const store = new Store({ nodeName: 'bench', serviceCidrs: [] })
  store.setObjects(
    [
      {
        kind: 'Service',
        meta: meta('backend'),
        spec: {
          type: 'ClusterIP', selector: { app: 'backend' }, clusterIPs: [], headless: false, ipFamilies: [], ipFamilyPolicy: 'SingleStack',
          ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: backendPort, nodePort: null, appProtocol: null }],
          externalName: null, externalIPs: [], sessionAffinity: 'None', affinityTimeoutSeconds: 10800, externalTrafficPolicy: 'Cluster',
          internalTrafficPolicy: 'Cluster', trafficDistribution: null, publishNotReadyAddresses: false, healthCheckNodePort: null,
          loadBalancerIP: null, loadBalancerClass: null,
        },
      },
      {
        kind: 'Pod',
        meta: meta('backend-1', { app: 'backend' }),
        spec: { nodeName: 'bench', hostname: null, subdomain: null, containers: [{ name: 'c', ports: [], readinessProbe: null, livenessProbe: null, startupProbe: null }] },
        status: { podIP: '127.0.0.1', podIPs: ['127.0.0.1'] },
      },
      {
        kind: 'Ingress',
        meta: meta('bench'),
        spec: {
          ingressClassName: 'meshlet', defaultBackend: null, tls: [],
          rules: [{ host: null, paths: [{ path: '/', pathType: 'Prefix', backend: { service: { name: 'backend', port: { number: 80, name: null } } } }] }],
        },
      },
    ],
    [],
  )
  store.flush()
  const plane = await startProxy({
    store,
    options: {
      files: [], nodeName: 'bench', nodeAddress: null, dns: null, http: { host: '127.0.0.1', port: 0 }, https: null, admin: null,
      upstreams: [], clusterDomain: 'cluster.local', serviceCidrs: [], vipMode: 'none', vipInterface: null, dnsTtl: 5,
      ingressClass: 'meshlet', accessLog: process.env.MESHLET_BENCH_ACCESS_LOG === 'on', trustForwardedFrom: [], execPrefix: null,
      onLivenessFailure: null, logLevel: 'info',
    },
    log: pino({ level: 'info' }, (await import('pino')).destination('/dev/null')),
    metrics: new Registry(),
    reporter: noopReporter,
  })
  const port = (plane.status() as { listeners: { http: { port: number } } }).listeners.http.port
  if (cluster.isWorker) process.send!({ port })
  else console.log(`READY ${port}`)
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
    const timer = setTimeout(() => reject(new Error(`${cmd.join(' ')}: not ready in 20 s`)), 20000)
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

async function startNginx(backendPort: number, workers: string, cpus: string | null, dir: string, t: Set<ChildProcess>): Promise<Proc> {
  const port = await freePort()
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
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Real-IP $remote_addr;
    }
  }
}
`
  const file = join(dir, `nginx-${port}.conf`)
  writeFileSync(file, process.getuid?.() === 0 ? conf : conf.replace('user root;\n', ''))
  const proc = spawn(pinned(cpus, ['nginx', '-p', dir, '-c', file])[0]!, pinned(cpus, ['nginx', '-p', dir, '-c', file]).slice(1), { stdio: 'ignore' })
  t.add(proc)
  for (let i = 0; i < 100; i++) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/`)
      await res.text()
      if (res.ok) return { proc, port }
    } catch {
      // not up yet
    }
    await sleep(50)
  }
  throw new Error(`nginx did not start; see ${dir}/error.log`)
}

/** CPU seconds (user+system) used so far by a process and its descendants (Linux /proc). */
function cpuSeconds(pid: number): number {
  let total = 0
  const visit = (p: number) => {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8')
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      total += (Number(fields[11]) + Number(fields[12])) / 100
      for (const task of [String(p)]) {
        const children = readFileSync(`/proc/${p}/task/${task}/children`, 'utf8').trim()
        for (const c of children.split(/\s+/).filter(Boolean)) visit(Number(c))
      }
    } catch {
      // gone
    }
  }
  visit(pid)
  return total
}

interface Result {
  rps: number
  p99ms: number
  cpuUsPerReq: number | null
}

function parseWrkLatency(s: string): number {
  const m = /([\d.]+)(us|ms|s)/.exec(s)
  if (!m) return NaN
  const v = Number(m[1])
  return m[2] === 'us' ? v / 1000 : m[2] === 's' ? v * 1000 : v
}

async function runLoad(tool: 'wrk' | 'autocannon', port: number, seconds: number, connections: number, loadCpus: string | null, pid: number | null): Promise<Result> {
  const url = `http://127.0.0.1:${port}/`
  const cpu0 = pid === null ? 0 : cpuSeconds(pid)
  let rps: number
  let p99ms: number
  let total: number
  if (tool === 'wrk') {
    const out = execFileSync(pinned(loadCpus, ['wrk'])[0]!, [...pinned(loadCpus, ['wrk']).slice(1), '-t1', `-c${connections}`, `-d${seconds}s`, '--latency', url], { encoding: 'utf8', timeout: (seconds + 20) * 1000 })
    rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1])
    p99ms = parseWrkLatency(/99%\s+(\S+)/.exec(out)?.[1] ?? '')
    total = Number(/(\d+) requests in/.exec(out)?.[1])
    const errors = /Non-2xx or 3xx responses: (\d+)|Socket errors: .*/.exec(out)
    if (errors) process.stderr.write(`  wrk: ${errors[0]}\n`)
  } else {
    const cmd = pinned(loadCpus, [NODE, join(ROOT, 'node_modules/autocannon/autocannon.js'), '-c', String(connections), '-d', String(seconds), '-j', url])
    const out = execFileSync(cmd[0]!, cmd.slice(1), { encoding: 'utf8', timeout: (seconds + 20) * 1000, stdio: ['ignore', 'pipe', 'ignore'] })
    const j = JSON.parse(out)
    rps = j.requests.average
    p99ms = j.latency.p99
    total = j.requests.total
    if (j.non2xx || j.errors) process.stderr.write(`  autocannon: non2xx=${j.non2xx} errors=${j.errors}\n`)
  }
  const cpuUsPerReq = pid === null ? null : ((cpuSeconds(pid) - cpu0) * 1e6) / total
  return { rps, p99ms, cpuUsPerReq }
}

function arg(args: string[], name: string, dflt: number): number {
  const a = args.find((x) => x.startsWith(`--${name}=`))
  return a ? Number(a.split('=')[1]) : dflt
}

export default async function run(args: string[]): Promise<void> {
  const quick = args.includes('--quick')
  const seconds = arg(args, 'duration', quick ? 3 : 8)
  const connections = arg(args, 'connections', 50)
  const procs = new Set<ChildProcess>()
  const dir = mkdtempSync(join(tmpdir(), 'meshlet-bench-proxy-'))
  const hasNginx = existsSync('/usr/sbin/nginx') || existsSync('/usr/bin/nginx')
  const rows: { section: string; tool: string; target: string; r: Result }[] = []
  const stop = (p: Proc) => {
    p.proc.kill('SIGTERM')
    procs.delete(p.proc)
  }
  const measure = async (section: string, tool: 'wrk' | 'autocannon', target: string, p: Proc, loadCpus: string | null) => {
    await runLoad(tool, p.port, 1, connections, loadCpus, null) // warm-up (JIT, pools)
    const r = await runLoad(tool, p.port, seconds, connections, loadCpus, p.proc.pid ?? null)
    rows.push({ section, tool, target, r })
    process.stdout.write(`  ${section.padEnd(9)} ${tool.padEnd(10)} ${target.padEnd(24)} ${r.rps.toFixed(0).padStart(8)} req/s  p99 ${r.p99ms.toFixed(2)} ms  cpu ${r.cpuUsPerReq?.toFixed(1) ?? '-'} µs/req\n`)
  }
  try {
    // ---- pinned: backend + proxy on CPU 0, load on CPU 1
    const backend = await startProc(pinned('0', [NODE, '-e', BACKEND_SRC]), procs)
    const tools: ('wrk' | 'autocannon')[] = ['wrk', 'autocannon']
    for (const tool of tools) {
      await measure('pinned', tool, 'direct', backend, '1')
      if (hasNginx) {
        const ng = await startNginx(backend.port, '1', '0', dir, procs)
        await measure('pinned', tool, 'nginx (1 worker)', ng, '1')
        stop(ng)
      }
      const m = await startProc(pinned('0', [NODE, SELF, '--serve-meshlet', String(backend.port), '1']), procs)
      await measure('pinned', tool, 'meshlet (1 process)', m, '1')
      stop(m)
      if (tool === 'wrk' && !quick) {
        const hp = await startProc(pinned('0', [NODE, '-e', HTTP_PROXY_SRC, String(backend.port)]), procs)
        await measure('pinned', tool, 'node-http-proxy', hp, '1')
        stop(hp)
      }
    }
    stop(backend)

    // ---- unpinned: what a second worker adds (everything shares the 2 CPUs)
    if (!quick) {
      const b2 = await startProc([NODE, '-e', BACKEND_SRC], procs)
      if (hasNginx) {
        const ng = await startNginx(b2.port, '1', null, dir, procs)
        await measure('unpinned', 'wrk', 'nginx (1 worker)', ng, null)
        stop(ng)
      }
      for (const workers of [1, 2]) {
        const m = await startProc([NODE, SELF, '--serve-meshlet', String(b2.port), String(workers)], procs)
        await measure('unpinned', 'wrk', `meshlet (${workers} process${workers > 1 ? 'es' : ''})`, m, null)
        stop(m)
      }
      stop(b2)
    }
  } finally {
    for (const p of procs) p.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  }

  // ---- table with ratios
  const find = (section: string, tool: string, target: string) => rows.find((x) => x.section === section && x.tool === tool && x.target === target)?.r
  process.stdout.write(`\n| section | tool | target | req/s | p99 ms | CPU µs/req | × direct | × nginx |\n|---|---|---|---:|---:|---:|---:|---:|\n`)
  for (const row of rows) {
    const direct = find(row.section, row.tool, 'direct')
    const nginx = find(row.section, row.tool, 'nginx (1 worker)')
    const x = (b: Result | undefined) => (b ? (row.r.rps / b.rps).toFixed(2) : '—')
    process.stdout.write(
      `| ${row.section} | ${row.tool} | ${row.target} | ${row.r.rps.toFixed(0)} | ${row.r.p99ms.toFixed(2)} | ${row.r.cpuUsPerReq?.toFixed(1) ?? '—'} | ${x(direct)} | ${x(nginx)} |\n`,
    )
  }
  const m = find('pinned', 'wrk', 'meshlet (1 process)')
  const hp = find('pinned', 'wrk', 'node-http-proxy')
  if (m && hp) process.stdout.write(`\nmeshlet / node-http-proxy (pinned, wrk): ${(m.rps / hp.rps).toFixed(2)}×\n`)
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  if (process.argv[2] === '--serve-meshlet') await serveMeshlet(Number(process.argv[3]), Number(process.argv[4] ?? 1))
  else await run(process.argv.slice(2))
}
