// L7 benchmark: meshlet's Ingress router against nginx (worker_processes 1, upstream keepalive) and node-http-proxy,
// same Node backend (13-byte answer), HTTP/1.1 keep-alive, 50 connections. Pinned like specs/perf-anchors.md:
// backend and proxy on CPU 0, the load generator on CPU 1. wrk is the main tool (cheaper per request than
// autocannon, which narrows gaps); autocannon is run too. A last unpinned section shows what a second meshlet worker
// process adds. Targets run in alternating rounds and the table shows medians: the machine is shared and noisy, so
// only ratios within one run mean much. Every run is bounded (5 s each, about 2.5 minutes in all).
//
//   npm run bench -- proxy [--duration=5] [--rounds=3] [--connections=50] [--quick]
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
// The reference "plain node:http server + undici Pool" proxy of specs/perf-anchors.md.
const UNDICI_PROXY_SRC = `
const http = require('node:http');
const { Pool } = require(${JSON.stringify(join(ROOT, 'node_modules/undici'))});
const pool = new Pool('http://127.0.0.1:' + process.argv[1], { connections: 256, keepAliveTimeout: 4000 });
const s = http.createServer(async (req, res) => {
  try {
    const r = await pool.request({ path: req.url, method: req.method, headers: req.headers, body: req.method === 'GET' || req.method === 'HEAD' ? null : req });
    res.writeHead(r.statusCode, r.headers);
    r.body.pipe(res);
  } catch { res.writeHead(502); res.end() }
});
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
  const { testRuntimeOptions } = await import('../test/helpers/options.ts')
  const meta = (name: string, labels: Record<string, string> = {}) => ({
    name,
    namespace: 'default',
    labels,
    annotations: {},
    deletionTimestamp: null,
    source: { file: 'bench', doc: 1 },
  })
  const store = new Store({ nodeName: 'bench', serviceCidrs: [] })
  store.setObjects(
    [
      {
        kind: 'Service',
        meta: meta('backend'),
        spec: {
          type: 'ClusterIP',
          selector: { app: 'backend' },
          clusterIPs: [],
          headless: false,
          ipFamilies: [],
          ipFamilyPolicy: 'SingleStack',
          ports: [
            { name: 'http', protocol: 'TCP', port: 80, targetPort: backendPort, nodePort: null, appProtocol: null },
          ],
          externalName: null,
          externalIPs: [],
          sessionAffinity: 'None',
          affinityTimeoutSeconds: 10800,
          externalTrafficPolicy: 'Cluster',
          internalTrafficPolicy: 'Cluster',
          trafficDistribution: null,
          publishNotReadyAddresses: false,
          healthCheckNodePort: null,
          loadBalancerIP: null,
          loadBalancerClass: null,
        },
      },
      {
        kind: 'Pod',
        meta: meta('backend-1', { app: 'backend' }),
        spec: {
          nodeName: 'bench',
          hostname: null,
          subdomain: null,
          containers: [{ name: 'c', ports: [], readinessProbe: null, livenessProbe: null, startupProbe: null }],
        },
        status: { podIP: '127.0.0.1', podIPs: ['127.0.0.1'] },
      },
      {
        kind: 'Ingress',
        meta: meta('bench'),
        spec: {
          ingressClassName: 'meshlet',
          defaultBackend: null,
          tls: [],
          rules: [
            {
              host: null,
              paths: [
                {
                  path: '/',
                  pathType: 'Prefix',
                  backend: { service: { name: 'backend', port: { number: 80, name: null } } },
                },
              ],
            },
          ],
        },
      },
    ],
    [],
  )
  store.flush()
  const plane = await startProxy({
    store,
    options: testRuntimeOptions({
      nodeName: 'bench',
      http: { host: '127.0.0.1', port: 0 },
      accessLog: process.env.MESHLET_BENCH_ACCESS_LOG === 'on',
      logLevel: 'info',
    }),
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

/**
 * nginx as a reverse proxy, 1 worker, upstream keepalive. `ingressHeaders`: the request headers ingress-nginx's
 * template sets (the same set meshlet sends: X-Request-ID, X-Real-IP, X-Forwarded-*, X-Scheme), so both proxies make
 * the backend parse the same request; without it, the minimal configuration of the issue.
 */
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

async function runLoad(
  tool: 'wrk' | 'autocannon',
  port: number,
  seconds: number,
  connections: number,
  loadCpus: string | null,
  pid: number | null,
): Promise<Result> {
  const url = `http://127.0.0.1:${port}/`
  const cpu0 = pid === null ? 0 : cpuSeconds(pid)
  let rps: number
  let p99ms: number
  let total: number
  if (tool === 'wrk') {
    const out = execFileSync(
      pinned(loadCpus, ['wrk'])[0]!,
      [...pinned(loadCpus, ['wrk']).slice(1), '-t1', `-c${connections}`, `-d${seconds}s`, '--latency', url],
      { encoding: 'utf8', timeout: (seconds + 20) * 1000 },
    )
    rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1])
    p99ms = parseWrkLatency(/99%\s+(\S+)/.exec(out)?.[1] ?? '')
    total = Number(/(\d+) requests in/.exec(out)?.[1])
    const errors = /Non-2xx or 3xx responses: (\d+)|Socket errors: .*/.exec(out)
    if (errors) process.stderr.write(`  wrk: ${errors[0]}\n`)
  } else {
    const cmd = pinned(loadCpus, [
      NODE,
      join(ROOT, 'node_modules/autocannon/autocannon.js'),
      '-c',
      String(connections),
      '-d',
      String(seconds),
      '-j',
      url,
    ])
    const out = execFileSync(cmd[0]!, cmd.slice(1), {
      encoding: 'utf8',
      timeout: (seconds + 20) * 1000,
      stdio: ['ignore', 'pipe', 'ignore'],
    })
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

function median(xs: number[]): number {
  const a = [...xs].sort((x, y) => x - y)
  return a[Math.floor(a.length / 2)]!
}

export default async function run(args: string[]): Promise<void> {
  const quick = args.includes('--quick')
  const seconds = arg(args, 'duration', quick ? 3 : 5)
  const rounds = arg(args, 'rounds', quick ? 1 : 3)
  const connections = arg(args, 'connections', 50)
  const procs = new Set<ChildProcess>()
  const dir = mkdtempSync(join(tmpdir(), 'meshlet-bench-proxy-'))
  const hasNginx = existsSync('/usr/sbin/nginx') || existsSync('/usr/bin/nginx')
  const rows: { section: string; tool: string; target: string; r: Result }[] = []
  const measure = async (
    section: string,
    tool: 'wrk' | 'autocannon',
    target: string,
    p: Proc,
    loadCpus: string | null,
    round: number,
  ) => {
    if (round === 1) await runLoad(tool, p.port, 1, connections, loadCpus, null) // warm-up (JIT, pools)
    const r = await runLoad(tool, p.port, seconds, connections, loadCpus, p.proc.pid ?? null)
    rows.push({ section, tool, target, r })
    process.stdout.write(
      `  ${section.padEnd(9)} ${tool.padEnd(10)} round ${round} ${target.padEnd(28)} ${r.rps.toFixed(0).padStart(8)} req/s  p99 ${r.p99ms.toFixed(2)} ms  cpu ${r.cpuUsPerReq?.toFixed(1) ?? '-'} µs/req\n`,
    )
  }
  try {
    // ---- pinned: backend + proxies on CPU 0, load on CPU 1; every target started once, rounds alternate targets
    const backend = await startProc(pinned('0', [NODE, '-e', BACKEND_SRC]), procs)
    const targets: [string, Proc][] = [['direct', backend]]
    if (hasNginx) {
      targets.push(['nginx (1 worker)', await startNginx(backend.port, '1', '0', dir, procs, false)])
      targets.push(['nginx, ingress-nginx headers', await startNginx(backend.port, '1', '0', dir, procs, true)])
    }
    targets.push([
      'meshlet (1 process)',
      await startProc(pinned('0', [NODE, SELF, '--serve-meshlet', String(backend.port), '1']), procs),
    ])
    if (!quick) {
      targets.push([
        'node:http + undici',
        await startProc(pinned('0', [NODE, '-e', UNDICI_PROXY_SRC, String(backend.port)]), procs),
      ])
      targets.push([
        'node-http-proxy',
        await startProc(pinned('0', [NODE, '-e', HTTP_PROXY_SRC, String(backend.port)]), procs),
      ])
    }
    for (let round = 1; round <= rounds; round++) {
      for (const [name, p] of targets) await measure('pinned', 'wrk', name, p, '1', round)
    }
    for (const [name, p] of targets) {
      if (name === 'direct' || name === 'nginx (1 worker)' || name === 'meshlet (1 process)')
        await measure('pinned', 'autocannon', name, p, '1', 1)
    }
    for (const [, p] of targets) if (p !== backend) p.proc.kill('SIGTERM')

    // ---- unpinned: what a second worker process adds (everything shares the 2 CPUs)
    if (!quick) {
      const un: [string, Proc][] = []
      if (hasNginx)
        un.push(['nginx, ingress-nginx headers', await startNginx(backend.port, '1', null, dir, procs, true)])
      for (const workers of [1, 2]) {
        un.push([
          `meshlet (${workers} process${workers > 1 ? 'es' : ''})`,
          await startProc([NODE, SELF, '--serve-meshlet', String(backend.port), String(workers)], procs),
        ])
      }
      for (let round = 1; round <= Math.min(rounds, 2); round++) {
        for (const [name, p] of un) await measure('unpinned', 'wrk', name, p, null, round)
      }
    }
  } finally {
    for (const p of procs) p.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  }

  // ---- table: medians over the rounds, with ratios
  const keys: string[] = []
  for (const row of rows) {
    const k = `${row.section}|${row.tool}|${row.target}`
    if (!keys.includes(k)) keys.push(k)
  }
  const med = (k: string): Result | undefined => {
    const rs = rows.filter((x) => `${x.section}|${x.tool}|${x.target}` === k).map((x) => x.r)
    if (rs.length === 0) return undefined
    const cpu = rs.map((r) => r.cpuUsPerReq).filter((c): c is number => c !== null)
    return {
      rps: median(rs.map((r) => r.rps)),
      p99ms: median(rs.map((r) => r.p99ms)),
      cpuUsPerReq: cpu.length ? median(cpu) : null,
    }
  }
  process.stdout.write(`\nmedian of ${rounds} round(s) × ${seconds} s, ${connections} connections, keep-alive\n`)
  process.stdout.write(
    `| section | tool | target | req/s | p99 ms | CPU µs/req | × direct | × nginx | × nginx (same headers) |\n|---|---|---|---:|---:|---:|---:|---:|---:|\n`,
  )
  for (const k of keys) {
    const [section, tool, target] = k.split('|') as [string, string, string]
    const r = med(k)!
    const x = (b: string) => {
      const base = med(`${section}|${tool}|${b}`)
      return base ? (r.rps / base.rps).toFixed(2) : '—'
    }
    process.stdout.write(
      `| ${section} | ${tool} | ${target} | ${r.rps.toFixed(0)} | ${r.p99ms.toFixed(2)} | ${r.cpuUsPerReq?.toFixed(1) ?? '—'} | ${x('direct')} | ${x('nginx (1 worker)')} | ${x('nginx, ingress-nginx headers')} |\n`,
    )
  }
  const m = med('pinned|wrk|meshlet (1 process)')
  const hp = med('pinned|wrk|node-http-proxy')
  if (m && hp) process.stdout.write(`\nmeshlet / node-http-proxy (pinned, wrk): ${(m.rps / hp.rps).toFixed(2)}×\n`)
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  if (process.argv[2] === '--serve-meshlet') await serveMeshlet(Number(process.argv[3]), Number(process.argv[4] ?? 1))
  else await run(process.argv.slice(2))
}
