// `npm run bench -- health`: the CPU cost of probing. 1,000 endpoints probed every second (httpGet and tcpSocket
// against local servers) by the health plane, running alone in a child process (Store + health/, the meshlet side of
// the work), while the backends run in this process so that their CPU is not counted. The child measures its own
// process.cpuUsage() over a fixed window after a warm-up and reports the share of one core; the budget is 5 %.
//
// Loopback only; every run is bounded (warm-up + window per scenario, well under 3 minutes in all).

import { spawn } from 'node:child_process'
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http'
import { createServer as createTcpServer, type Server as TcpServer, type AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import type { Pod } from '../model/objects.ts'

const CHILD_ENV = 'MESHLET_BENCH_HEALTH_CHILD'
const ENDPOINTS = 1000
const WARMUP_MS = 4000
const WINDOW_MS = 15_000
const BUDGET_PERCENT = 5

interface ChildConfig {
  readonly httpPorts: number[]
  readonly tcpPorts: number[]
  /** Share of the endpoints probed with httpGet; the rest use tcpSocket. */
  readonly httpShare: number
}

interface ChildResult {
  readonly cpuPercent: number
  readonly userMs: number
  readonly systemMs: number
  readonly probesPerSecond: number
  readonly failures: number
  readonly workers: number
  readonly rssMiB: number
}

async function child(config: ChildConfig): Promise<void> {
  const { Store } = await import('../model/store.ts')
  const { startHealth } = await import('../health/index.ts')
  const { noopReporter } = await import('../model/snapshot.ts')
  const { pino } = await import('pino')
  const { Registry } = await import('prom-client')
  const pods: Pod[] = []
  const nHttp = Math.round(ENDPOINTS * config.httpShare)
  for (let i = 0; i < ENDPOINTS; i++) {
    const http = i < nHttp
    const ports = http ? config.httpPorts : config.tcpPorts
    const port = ports[i % ports.length]!
    const ip = `127.1.${Math.floor(i / 250)}.${(i % 250) + 1}`
    pods.push({
      kind: 'Pod',
      meta: {
        name: `p${i}`,
        namespace: 'default',
        labels: { app: 'bench' },
        annotations: {},
        deletionTimestamp: null,
        source: { file: 'bench', doc: 1 },
      },
      spec: {
        nodeName: 'bench',
        hostname: null,
        subdomain: null,
        containers: [
          {
            name: 'app',
            ports: [],
            livenessProbe: null,
            startupProbe: null,
            readinessProbe: {
              handler: http
                ? { type: 'httpGet', scheme: 'HTTP', host: '127.0.0.1', path: '/healthz', port, httpHeaders: [] }
                : { type: 'tcpSocket', host: '127.0.0.1', port },
              initialDelaySeconds: 0,
              periodSeconds: 1,
              timeoutSeconds: 1,
              successThreshold: 1,
              failureThreshold: 3,
            },
          },
        ],
      },
      status: { podIP: ip, podIPs: [ip] },
    })
  }
  const store = new Store({ nodeName: 'bench', serviceCidrs: [] })
  store.setObjects(pods, [])
  store.flush()
  const metrics = new Registry()
  const plane = await startHealth({
    store,
    options: { execPrefix: null, onLivenessFailure: null } as never,
    log: pino({ level: 'silent' }),
    metrics,
    reporter: noopReporter,
  })
  const count = async (result: string) => {
    const m = (await metrics.getSingleMetric('meshlet_health_probe_results_total')!.get()) as {
      values: { value: number; labels: Record<string, string> }[]
    }
    return m.values.filter((v) => v.labels.result === result).reduce((a, v) => a + v.value, 0)
  }
  await new Promise((r) => setTimeout(r, WARMUP_MS))
  const probes0 = (await count('success')) + (await count('failure'))
  const fail0 = await count('failure')
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  await new Promise((r) => setTimeout(r, WINDOW_MS))
  const cpu = process.cpuUsage(cpu0)
  const elapsed = performance.now() - t0
  const probes = (await count('success')) + (await count('failure')) - probes0
  const failures = (await count('failure')) - fail0
  const workers = (
    (await metrics.getSingleMetric('meshlet_health_probe_workers')!.get()) as { values: { value: number }[] }
  ).values[0]!.value
  await plane.close(Date.now())
  const result: ChildResult = {
    cpuPercent: ((cpu.user + cpu.system) / 1000 / elapsed) * 100,
    userMs: cpu.user / 1000,
    systemMs: cpu.system / 1000,
    probesPerSecond: probes / (elapsed / 1000),
    failures,
    workers,
    rssMiB: process.memoryUsage().rss / 1024 / 1024,
  }
  process.stdout.write(JSON.stringify(result) + '\n')
  process.exit(0)
}

async function listenAll<T extends HttpServer | TcpServer>(
  make: () => T,
  n: number,
): Promise<{ servers: T[]; ports: number[] }> {
  const servers: T[] = []
  for (let i = 0; i < n; i++) {
    const s = make()
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()))
    servers.push(s)
  }
  return { servers, ports: servers.map((s) => (s.address() as AddressInfo).port) }
}

function runChild(config: ChildConfig): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [fileURLToPath(import.meta.url)], {
      env: { ...process.env, [CHILD_ENV]: JSON.stringify(config) },
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    let out = ''
    proc.stdout.setEncoding('utf8').on('data', (c: string) => (out += c))
    const killer = setTimeout(() => proc.kill('SIGKILL'), WARMUP_MS + WINDOW_MS + 30_000)
    proc.on('exit', (code) => {
      clearTimeout(killer)
      try {
        resolve(JSON.parse(out.trim().split('\n').pop()!))
      } catch {
        reject(new Error(`bench child exited ${code} without a result: ${out}`))
      }
    })
  })
}

export default async function run(_args: string[]): Promise<void> {
  const http = await listenAll(
    () =>
      createHttpServer((req, res) => {
        res.writeHead(200, { 'content-type': 'text/plain' })
        res.end('ok')
      }),
    4,
  )
  const tcp = await listenAll(() => createTcpServer((s) => s.on('error', () => {}).end()), 4)
  const scenarios: { name: string; httpShare: number }[] = [
    { name: '500 httpGet + 500 tcpSocket', httpShare: 0.5 },
    { name: '1000 httpGet', httpShare: 1 },
    { name: '1000 tcpSocket', httpShare: 0 },
  ]
  const rows: string[][] = []
  try {
    for (const sc of scenarios) {
      const r = await runChild({ httpPorts: http.ports, tcpPorts: tcp.ports, httpShare: sc.httpShare })
      rows.push([
        sc.name,
        String(r.workers),
        r.probesPerSecond.toFixed(0),
        String(r.failures),
        `${r.cpuPercent.toFixed(2)} %`,
        `${(r.cpuPercent / BUDGET_PERCENT).toFixed(2)}`,
        r.rssMiB.toFixed(0),
      ])
    }
  } finally {
    for (const s of [...http.servers, ...tcp.servers]) {
      if ('closeAllConnections' in s) s.closeAllConnections()
      s.close()
    }
  }
  const header = [
    'scenario (period 1 s)',
    'workers',
    'probes/s',
    'failures',
    'CPU (one core)',
    `ratio to ${BUDGET_PERCENT} % budget`,
    'RSS MiB',
  ]
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ')
  process.stdout.write(
    `health: ${ENDPOINTS} endpoints probed every second; CPU of the probing process over ${WINDOW_MS / 1000} s after ${WARMUP_MS / 1000} s warm-up\n`,
  )
  process.stdout.write(line(header) + '\n' + line(widths.map((w) => '-'.repeat(w))) + '\n')
  for (const r of rows) process.stdout.write(line(r) + '\n')
}

if (process.env[CHILD_ENV]) await child(JSON.parse(process.env[CHILD_ENV]) as ChildConfig)
else if (process.argv[1] === fileURLToPath(import.meta.url)) await run(process.argv.slice(2))
