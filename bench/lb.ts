// `npm run bench -- lb`: the L4 balancer against HAProxy in `mode tcp` (one thread) and a direct connection, same
// backends, alternating rounds:
//   - bulk throughput: iperf3 -c through each to one `iperf3 -s`;
//   - new connections per second and p99: wrk -H 'Connection: close' through each to a one-worker nginx answering 200.
// Pinning (taskset): proxy and backend on CPU 0, the load generator on CPU 1. Bounded: about 70 s with the defaults.
// Flags: --seconds=N (per measurement, default 4), --rounds=N (default 2), --connections=N (wrk, default 32).

import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { connect, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

const run = promisify(execFile)
const MESHLET = fileURLToPath(new URL('../bin/meshlet.ts', import.meta.url))
const HOST = '127.0.0.1'
const PROXY_CPU = '0'
const LOAD_CPU = '1'

function arg(args: string[], name: string, dflt: number): number {
  const a = args.find((x) => x.startsWith(`--${name}=`))
  return a ? Number(a.split('=')[1]) : dflt
}

function freePort(host = HOST): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, host, () => {
      const p = (s.address() as { port: number }).port
      s.close(() => resolve(p))
    })
  })
}

function pinned(cpu: string, cmd: string[]): [string, string[]] {
  return ['taskset', ['-c', cpu, ...cmd]]
}

async function waitTcp(host: string, port: number, what: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, host)
      s.once('connect', () => (s.destroy(), resolve(true)))
      s.once('error', () => resolve(false))
    })
    if (ok) return
    await sleep(50)
  }
  throw new Error(`${what} did not listen on ${host}:${port}`)
}

interface Bulk {
  gbps: number
}

interface Rate {
  cps: number
  p99ms: number
  errors: string | null
}

function wrkLatencyMs(s: string): number {
  const m = /([\d.]+)(us|ms|s)/.exec(s)
  if (!m) return NaN
  const v = Number(m[1])
  return m[2] === 'us' ? v / 1000 : m[2] === 's' ? v * 1000 : v
}

function median(xs: number[]): number {
  const a = [...xs].sort((x, y) => x - y)
  const mid = Math.floor(a.length / 2)
  if (a.length === 0) return NaN
  return a.length % 2 === 1 ? a[mid]! : (a[mid - 1]! + a[mid]!) / 2
}

export default async function runBench(args: string[]): Promise<void> {
  const seconds = arg(args, 'seconds', 4)
  const rounds = arg(args, 'rounds', 2)
  const connections = arg(args, 'connections', 32)
  const dir = mkdtempSync(join(tmpdir(), 'meshlet-bench-lb-'))
  const procs: ChildProcess[] = []
  const start = (cpu: string, cmd: string[], opts: { stdout?: boolean } = {}) => {
    const [c, a] = pinned(cpu, cmd)
    const p = spawn(c, a, { stdio: ['ignore', opts.stdout ? 'pipe' : 'ignore', 'ignore'] })
    procs.push(p)
    return p
  }
  try {
    // Backends on CPU 0, with the proxies.
    const iperfPort = await freePort()
    start(PROXY_CPU, ['iperf3', '-s', '-B', HOST, '-p', String(iperfPort)])
    const httpPort = await freePort()
    const conf = `worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path ${dir}/cb; proxy_temp_path ${dir}/pt; fastcgi_temp_path ${dir}/ft; uwsgi_temp_path ${dir}/ut; scgi_temp_path ${dir}/st;
  server { listen ${HOST}:${httpPort}; location / { return 200 "ok\\n"; } }
}
`
    writeFileSync(
      join(dir, 'nginx.conf'),
      process.getuid?.() === 0 ? conf.replace('daemon off;', 'daemon off;\nuser root;') : conf,
    )
    start(PROXY_CPU, ['nginx', '-p', dir, '-c', join(dir, 'nginx.conf')])
    await waitTcp(HOST, iperfPort, 'iperf3 -s')
    await waitTcp(HOST, httpPort, 'nginx')

    // HAProxy, mode tcp, one thread.
    const haIperf = await freePort()
    const haHttp = await freePort()
    writeFileSync(
      join(dir, 'haproxy.cfg'),
      `global
  nbthread 1
  maxconn 9000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen iperf
  bind ${HOST}:${haIperf}
  server s1 ${HOST}:${iperfPort}
listen http
  bind ${HOST}:${haHttp}
  server s1 ${HOST}:${httpPort}
`,
    )
    start(PROXY_CPU, ['haproxy', '-db', '-f', join(dir, 'haproxy.cfg')])
    await waitTcp(HOST, haHttp, 'haproxy')

    // meshlet: two ClusterIP Services with fixed addresses, one endpoint each.
    const vip = `127.${120 + (process.pid % 50)}.0`
    writeFileSync(
      join(dir, 'lb.yaml'),
      `apiVersion: v1
kind: Service
metadata: { name: iperf }
spec: { clusterIP: ${vip}.10, ports: [{ name: t, port: 5201 }] }
---
apiVersion: v1
kind: Endpoints
metadata: { name: iperf }
subsets: [{ addresses: [{ ip: ${HOST} }], ports: [{ name: t, port: ${iperfPort} }] }]
---
apiVersion: v1
kind: Service
metadata: { name: http }
spec: { clusterIP: ${vip}.11, ports: [{ name: h, port: 80 }] }
---
apiVersion: v1
kind: Endpoints
metadata: { name: http }
subsets: [{ addresses: [{ ip: ${HOST} }], ports: [{ name: h, port: ${httpPort} }] }]
`,
    )
    start(PROXY_CPU, [
      process.execPath,
      MESHLET,
      'up',
      '-f',
      join(dir, 'lb.yaml'),
      '--service-cidr',
      `${vip}.0/24`,
      '--node-address',
      `${vip}.250`,
      '--dns',
      'off',
      '--http',
      'off',
      '--https',
      'off',
      '--admin',
      'off',
      '--upstream',
      '127.0.0.1:1',
      '--discovery-resolver',
      '127.0.0.1:1',
      '--log-level',
      'warn',
    ])
    const mIperf = { host: `${vip}.10`, port: 5201 }
    const mHttp = { host: `${vip}.11`, port: 80 }
    await waitTcp(mIperf.host, mIperf.port, 'meshlet (iperf Service)')
    await waitTcp(mHttp.host, mHttp.port, 'meshlet (http Service)')

    const targets = {
      direct: { iperf: { host: HOST, port: iperfPort }, http: { host: HOST, port: httpPort } },
      haproxy: { iperf: { host: HOST, port: haIperf }, http: { host: HOST, port: haHttp } },
      meshlet: { iperf: mIperf, http: mHttp },
    } as const
    const names = ['direct', 'haproxy', 'meshlet'] as const
    const bulk: Record<string, number[]> = { direct: [], haproxy: [], meshlet: [] }
    const cps: Record<string, number[]> = { direct: [], haproxy: [], meshlet: [] }
    const p99: Record<string, number[]> = { direct: [], haproxy: [], meshlet: [] }
    const deadline = Date.now() + 170_000
    for (let r = 0; r < rounds && Date.now() < deadline - 4 * 6 * seconds * 1000; r++) {
      for (const name of r % 2 === 0 ? names : [...names].reverse()) {
        const tg = targets[name]
        const b = await iperfTo(tg.iperf.host, tg.iperf.port, seconds)
        bulk[name]!.push(b.gbps)
        await sleep(500)
        const w = await wrkTo(tg.http.host, tg.http.port, seconds, connections)
        if (w.errors) process.stderr.write(`  ${name}: wrk ${w.errors}\n`)
        cps[name]!.push(w.cps)
        p99[name]!.push(w.p99ms)
        process.stdout.write(
          `  round ${r + 1} ${name.padEnd(8)} bulk ${b.gbps.toFixed(2)} Gbit/s   ${w.cps.toFixed(0)} conn/s   p99 ${w.p99ms.toFixed(2)} ms\n`,
        )
        await sleep(1000) // let TIME_WAIT and the CPU settle between runs
      }
    }
    const row = (n: string) => ({ bulk: median(bulk[n]!), cps: median(cps[n]!), p99: median(p99[n]!) })
    const d = row('direct')
    const h = row('haproxy')
    const m = row('meshlet')
    process.stdout.write(
      `\nL4 balancer: medians of ${bulk.meshlet!.length} rounds, ${seconds} s each; proxy+backend on CPU ${PROXY_CPU}, load on CPU ${LOAD_CPU}\n`,
    )
    process.stdout.write(
      `${'path'.padEnd(22)}${'bulk Gbit/s'.padStart(13)}${'new conn/s'.padStart(13)}${'p99 ms'.padStart(10)}\n`,
    )
    for (const [label, x] of [
      ['direct', d],
      ['haproxy (mode tcp, 1t)', h],
      ['meshlet', m],
    ] as const) {
      process.stdout.write(
        `${label.padEnd(22)}${x.bulk.toFixed(2).padStart(13)}${x.cps.toFixed(0).padStart(13)}${x.p99.toFixed(2).padStart(10)}\n`,
      )
    }
    process.stdout.write(
      `${'meshlet / haproxy'.padEnd(22)}${(m.bulk / h.bulk).toFixed(2).padStart(12)}x${(m.cps / h.cps).toFixed(2).padStart(12)}x${(m.p99 / h.p99).toFixed(2).padStart(9)}x\n`,
    )
    process.stdout.write(
      `${'meshlet / direct'.padEnd(22)}${(m.bulk / d.bulk).toFixed(2).padStart(12)}x${(m.cps / d.cps).toFixed(2).padStart(12)}x${(m.p99 / d.p99).toFixed(2).padStart(9)}x\n`,
    )
  } finally {
    for (const p of procs) p.kill('SIGTERM')
    await sleep(300)
    for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  }
}

async function iperfTo(host: string, port: number, seconds: number): Promise<Bulk> {
  const [cmd, args] = pinned(LOAD_CPU, ['iperf3', '-c', host, '-p', String(port), '-t', String(seconds), '-J'])
  const { stdout } = await run(cmd, args, { timeout: (seconds + 20) * 1000, maxBuffer: 16 << 20 })
  const j = JSON.parse(stdout)
  return { gbps: j.end.sum_received.bits_per_second / 1e9 }
}

async function wrkTo(host: string, port: number, seconds: number, connections: number): Promise<Rate> {
  const [cmd, args] = pinned(LOAD_CPU, [
    'wrk',
    '-t1',
    `-c${connections}`,
    `-d${seconds}s`,
    '--latency',
    '-H',
    'Connection: close',
    `http://${host}:${port}/`,
  ])
  const { stdout } = await run(cmd, args, { timeout: (seconds + 20) * 1000 })
  const errors = /Socket errors: .*|Non-2xx or 3xx responses: \d+/.exec(stdout)?.[0] ?? null
  return {
    cps: Number(/Requests\/sec:\s+([\d.]+)/.exec(stdout)?.[1]),
    p99ms: wrkLatencyMs(/^\s+99%\s+(\S+)/m.exec(stdout)?.[1] ?? ''),
    errors,
  }
}

// Also runnable on its own: `npx node bench/lb.ts`.
if (import.meta.url === `file://${process.argv[1]}`) await runBench(process.argv.slice(2))
