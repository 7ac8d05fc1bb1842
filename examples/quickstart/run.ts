// `npm start`: starts the quickstart's backends on loopback, then `meshlet up` on unprivileged ports, and once
// /readyz answers 200 prints where to point dig, curl and a browser, with the ports meshlet actually listens on (a
// flag after `npm start --` wins over ours). Nothing is printed when meshlet fails. Ctrl-C stops everything.

import { spawn } from 'node:child_process'
import { createServer, type Server } from 'node:http'
import { fileURLToPath } from 'node:url'

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url))
const PORTS = { dns: '127.0.0.1:5353', http: '127.0.0.1:8080', https: '127.0.0.1:8443', admin: '127.0.0.1:9901' }

function backend(name: string, host: string): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.url === '/healthz') return void res.end('ok\n')
    res.setHeader('content-type', 'application/json')
    res.end(
      JSON.stringify({
        pod: name,
        path: req.url,
        host: req.headers.host,
        forwardedFor: req.headers['x-forwarded-for'] ?? null,
      }) + '\n',
    )
  })
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(8080, host, () => resolve(server))
  })
}

const servers = await Promise.all([
  backend('web-1', '127.0.0.11'),
  backend('web-2', '127.0.0.12'),
  backend('api-1', '127.0.0.21'),
])

const meshlet = spawn(
  process.execPath,
  [
    here('../../bin/meshlet.ts'),
    'up',
    '-f',
    here('manifests.yaml'),
    '--node',
    'local',
    '--dns',
    PORTS.dns,
    '--http',
    PORTS.http,
    '--https',
    PORTS.https,
    '--admin',
    PORTS.admin,
    ...process.argv.slice(2),
  ],
  { stdio: ['ignore', 'inherit', 'inherit'] },
)

let exited = false
/** The admin address meshlet uses: the last --admin given (flags after `npm start --` win), else ours. */
function adminAddress(argv: readonly string[]): string {
  let admin = process.env.MESHLET_ADMIN || PORTS.admin
  for (const [i, a] of argv.entries()) {
    if (a === '--admin' && argv[i + 1] !== undefined) admin = argv[i + 1]!
    else if (a.startsWith('--admin=')) admin = a.slice('--admin='.length)
  }
  return admin
}

interface Listener {
  readonly address: string
  readonly port: number
}

/** Polls /readyz (bounded: 60 s); then the ports actually in use, from /status. null when meshlet failed. */
async function whenReady(admin: string): Promise<{ dns?: Listener; http?: Listener; https?: Listener } | null> {
  for (let i = 0; i < 300 && !exited; i++) {
    try {
      if ((await fetch(`http://${admin}/readyz`, { signal: AbortSignal.timeout(1000) })).status === 200) {
        const status = (await (await fetch(`http://${admin}/status`)).json()) as {
          planes: {
            dns?: { listeners: Listener[] }
            proxy?: { listeners: { http?: Listener & { state: string }; https?: Listener & { state: string } } }
          }
        }
        const proxy = status.planes.proxy?.listeners
        return { dns: status.planes.dns?.listeners[0], http: proxy?.http, https: proxy?.https }
      }
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200))
  }
  return null
}

const admin = adminAddress(process.argv.slice(2))
void whenReady(admin).then((ports) => {
  if (ports === null || exited) return
  const lines: string[] = []
  const { dns, http, https } = ports
  if (dns) {
    const d = `dig @${dns.address} -p ${dns.port}`
    lines.push(
      `${d} web.default.svc.cluster.local       # the ClusterIP`,
      `${d} api.default.svc.cluster.local       # headless: the ready Pod addresses`,
      `${d} _http._tcp.web.default.svc.cluster.local SRV`,
      `curl http://$(dig +short @${dns.address} -p ${dns.port} web.default.svc.cluster.local):8080/   # L4 through the ClusterIP`,
    )
  }
  if (http) {
    lines.push(
      `curl -H 'Host: web.localhost' http://${http.address}:${http.port}/   # the Ingress, round robin over web-1 and web-2`,
      `curl http://web.localhost:${http.port}/api/v1                       # browsers resolve *.localhost to loopback`,
    )
  }
  if (https)
    lines.push(`curl -k --resolve web.localhost:${https.port}:${https.address} https://web.localhost:${https.port}/`)
  lines.push(
    `npx meshlet get services --admin ${admin}               # the Services as a table`,
    `open http://${admin}/ui                                 # the dashboard`,
    `curl http://${admin}/status                             # every Service, endpoint and listener`,
  )
  process.stderr.write(
    `\n  meshlet quickstart is ready. Try:\n\n${lines.map((l) => `    ${l}\n`).join('')}\n  Ctrl-C stops it.\n\n`,
  )
})

const stop = () => meshlet.kill('SIGTERM')
process.on('SIGINT', stop)
process.on('SIGTERM', stop)
meshlet.on('exit', (code) => {
  exited = true
  for (const s of servers) s.close()
  process.exit(code ?? 0)
})
