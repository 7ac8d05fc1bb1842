// `npm run bench -- lb`: the L4 balancer in both data planes (--l4-mode userspace, and nftables as root) against
// HAProxy in `mode tcp` (one thread) and a direct connection, same backends, alternating rounds:
//   - bulk throughput: iperf3 -c through each to one `iperf3 -s`;
//   - new connections per second and p99: wrk -H 'Connection: close' through each to a one-worker nginx answering 200;
//   - CPU per connection during the wrk run: wrk (its `times`) + nginx's worker + the proxy process, from /proc, so
//     the kernel's share is counted wherever it runs on behalf of those processes; `− direct` is the proxy's cost.
// As root everything runs in a network namespace the bench creates (the nftables table stays there), else in the
// caller's without the nftables row. Pinning (taskset): proxy and backend on CPU 0, the load generator on CPU 1.
// Bounded: about 100 s with the defaults. Flags: --seconds=N (per measurement, default 4), --rounds=N (default 2),
// --connections=N (wrk, default 32).

import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { connect, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

const run = promisify(execFile)
const MESHLET = fileURLToPath(new URL('../bin/meshlet.ts', import.meta.url))
const HOST = '127.0.0.1'
const NETNS_ENV = 'MESHLET_BENCH_LB_NETNS'
const CLK_TCK = 100
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
  /** wrk's own user+system CPU seconds. */
  cpu: number
  requests: number
}

/** utime+stime of a process and of the children listed in /proc (nginx's worker), in seconds; 0 when gone. */
function cpuOf(pid: number | undefined): number {
  if (pid === undefined) return 0
  const one = (p: string) => {
    try {
      const f = readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]!.split(' ')
      return (Number(f[11]) + Number(f[12])) / CLK_TCK
    } catch {
      return 0
    }
  }
  let children: string[] = []
  try {
    children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean)
  } catch {
    // no children file: the process alone
  }
  return one(String(pid)) + children.reduce((sum, c) => sum + one(c), 0)
}

/** As root: the whole bench again inside a fresh network namespace (loopback up), then the namespace is removed. */
async function inNamespace(args: string[]): Promise<void> {
  const ns = `mlt-bench-lb-${process.pid}`
  await run('ip', ['netns', 'add', ns])
  try {
    await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up'])
    const self = fileURLToPath(import.meta.url)
    const child = spawn('ip', ['netns', 'exec', ns, process.execPath, self, ...args], {
      stdio: 'inherit',
      env: { ...process.env, [NETNS_ENV]: '1' },
    })
    await new Promise<void>((resolve, reject) =>
      child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`bench in ${ns} exited ${code}`)))),
    )
  } finally {
    await run('ip', ['netns', 'del', ns]).catch(() => {})
  }
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
  const root = process.getuid?.() === 0
  if (root && process.env[NETNS_ENV] !== '1') return inNamespace(args)
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
    const nginx = start(PROXY_CPU, ['nginx', '-p', dir, '-c', join(dir, 'nginx.conf')])
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
    const haproxy = start(PROXY_CPU, ['haproxy', '-db', '-f', join(dir, 'haproxy.cfg')])
    await waitTcp(HOST, haHttp, 'haproxy')

    // meshlet: two ClusterIP Services with fixed addresses, one endpoint each; once per data plane.
    const startMeshlet = async (mode: 'userspace' | 'nftables', vip: string) => {
      const file = join(dir, `lb-${mode}.yaml`)
      writeFileSync(
        file,
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
      const proc = start(PROXY_CPU, [
        process.execPath,
        MESHLET,
        'up',
        '-f',
        file,
        '--l4-mode',
        mode,
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
      await waitTcp(mIperf.host, mIperf.port, `meshlet ${mode} (iperf Service)`)
      await waitTcp(mHttp.host, mHttp.port, `meshlet ${mode} (http Service)`)
      return { iperf: mIperf, http: mHttp, pid: proc.pid }
    }
    const block = 120 + (process.pid % 50)
    const userspace = await startMeshlet('userspace', `127.${block}.0`)
    // nftables needs CAP_NET_ADMIN in this namespace: as root, the namespace is the bench's own.
    const nft = root ? await startMeshlet('nftables', `127.${block}.1`) : null
    if (!nft) process.stdout.write('  nftables row left out: needs root (its own network namespace)\n')

    const targets: Record<
      string,
      { iperf: { host: string; port: number }; http: { host: string; port: number }; pid?: number }
    > = {
      direct: { iperf: { host: HOST, port: iperfPort }, http: { host: HOST, port: httpPort } },
      haproxy: { iperf: { host: HOST, port: haIperf }, http: { host: HOST, port: haHttp }, pid: haproxy.pid },
      meshlet: userspace,
      ...(nft ? { nftables: nft } : {}),
    }
    const names = Object.keys(targets)
    const bulk: Record<string, number[]> = {}
    const cps: Record<string, number[]> = {}
    const p99: Record<string, number[]> = {}
    const cpuUs: Record<string, number[]> = {}
    for (const n of names) {
      bulk[n] = []
      cps[n] = []
      p99[n] = []
      cpuUs[n] = []
    }
    const deadline = Date.now() + 240_000
    for (let r = 0; r < rounds && Date.now() < deadline - names.length * 3 * seconds * 1000; r++) {
      for (const name of r % 2 === 0 ? names : [...names].reverse()) {
        const tg = targets[name]!
        const b = await iperfTo(tg.iperf.host, tg.iperf.port, seconds)
        bulk[name]!.push(b.gbps)
        await sleep(500)
        const before = cpuOf(nginx.pid) + cpuOf(tg.pid)
        const w = await wrkTo(tg.http.host, tg.http.port, seconds, connections)
        const used = cpuOf(nginx.pid) + cpuOf(tg.pid) - before + w.cpu
        if (w.errors) process.stderr.write(`  ${name}: wrk ${w.errors}\n`)
        cps[name]!.push(w.cps)
        p99[name]!.push(w.p99ms)
        cpuUs[name]!.push(w.requests > 0 ? (used / w.requests) * 1e6 : NaN)
        process.stdout.write(
          `  round ${r + 1} ${name.padEnd(9)} bulk ${b.gbps.toFixed(2)} Gbit/s   ${w.cps.toFixed(0)} conn/s   p99 ${w.p99ms.toFixed(2)} ms   CPU ${cpuUs[name]!.at(-1)!.toFixed(0)} µs/conn\n`,
        )
        await sleep(1000) // let TIME_WAIT and the CPU settle between runs
      }
    }
    const row = (n: string) => ({
      bulk: median(bulk[n]!),
      cps: median(cps[n]!),
      p99: median(p99[n]!),
      cpu: median(cpuUs[n]!),
    })
    const d = row('direct')
    const h = row('haproxy')
    process.stdout.write(
      `\nL4 balancer: medians of ${bulk.direct!.length} rounds, ${seconds} s each; proxy+backend on CPU ${PROXY_CPU}, load on CPU ${LOAD_CPU}; load average ${readFileSync('/proc/loadavg', 'utf8').split(' ')[0]}\n`,
    )
    process.stdout.write(
      `${'path'.padEnd(24)}${'bulk Gbit/s'.padStart(13)}${'new conn/s'.padStart(13)}${'p99 ms'.padStart(10)}${'CPU µs/conn'.padStart(13)}${'− direct'.padStart(10)}\n`,
    )
    const labels: Record<string, string> = {
      direct: 'direct',
      haproxy: 'haproxy (mode tcp, 1t)',
      meshlet: 'meshlet userspace',
      nftables: 'meshlet nftables',
    }
    for (const n of names) {
      const x = row(n)
      process.stdout.write(
        `${labels[n]!.padEnd(24)}${x.bulk.toFixed(2).padStart(13)}${x.cps.toFixed(0).padStart(13)}${x.p99.toFixed(2).padStart(10)}${x.cpu.toFixed(0).padStart(13)}${(x.cpu - d.cpu).toFixed(0).padStart(10)}\n`,
      )
    }
    for (const n of names.filter((x) => x === 'meshlet' || x === 'nftables')) {
      const m = row(n)
      for (const [base, label] of [
        [h, 'haproxy'],
        [d, 'direct'],
      ] as const) {
        process.stdout.write(
          `${`${labels[n]!.slice(8)} / ${label}`.padEnd(24)}${(m.bulk / base.bulk).toFixed(2).padStart(12)}x${(m.cps / base.cps).toFixed(2).padStart(12)}x${(m.p99 / base.p99).toFixed(2).padStart(9)}x${(m.cpu / base.cpu).toFixed(2).padStart(12)}x\n`,
        )
      }
    }
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
  // `times` after wrk: the shell's children's user and system CPU, i.e. wrk's own, kernel work on its behalf included.
  const wrk = `wrk -t1 -c${connections} -d${seconds}s --latency -H 'Connection: close' http://${host}:${port}/; times`
  const [cmd, args] = pinned(LOAD_CPU, ['sh', '-c', wrk])
  const { stdout } = await run(cmd, args, { timeout: (seconds + 20) * 1000 })
  const errors = /Socket errors: .*|Non-2xx or 3xx responses: \d+/.exec(stdout)?.[0] ?? null
  const lines = stdout.trim().split('\n')
  const secs = (t: string) => {
    const m = /(\d+)m([\d.]+)s/.exec(t)
    return m ? Number(m[1]) * 60 + Number(m[2]) : 0
  }
  const [cu, cs] = (lines.at(-1) ?? '').split(/\s+/)
  return {
    cps: Number(/Requests\/sec:\s+([\d.]+)/.exec(stdout)?.[1]),
    p99ms: wrkLatencyMs(/^\s+99%\s+(\S+)/m.exec(stdout)?.[1] ?? ''),
    errors,
    cpu: secs(cu ?? '') + secs(cs ?? ''),
    requests: Number(/(\d+) requests in/.exec(stdout)?.[1] ?? 0),
  }
}

// Also runnable on its own: `npx node bench/lb.ts`.
if (import.meta.url === `file://${process.argv[1]}`) await runBench(process.argv.slice(2))
