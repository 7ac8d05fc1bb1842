// `npm start`: starts the quickstart's backends on loopback, then `meshlet up` on unprivileged ports, and prints
// where to point dig, curl and a browser. Ctrl-C stops everything.

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

setTimeout(() => {
  process.stderr.write(`
  meshlet quickstart is running. Try:

    dig @127.0.0.1 -p 5353 web.default.svc.cluster.local       # the ClusterIP
    dig @127.0.0.1 -p 5353 api.default.svc.cluster.local       # headless: the ready Pod addresses
    dig @127.0.0.1 -p 5353 _http._tcp.web.default.svc.cluster.local SRV
    curl http://$(dig +short @127.0.0.1 -p 5353 web.default.svc.cluster.local):8080/   # L4 through the ClusterIP
    curl -H 'Host: web.localhost' http://127.0.0.1:8080/       # the Ingress, round robin over web-1 and web-2
    curl http://web.localhost:8080/api/v1                      # browsers resolve *.localhost to loopback
    curl http://127.0.0.1:9901/status                          # every Service, endpoint and listener

  Ctrl-C stops it.
`)
}, 1500).unref()

const stop = () => meshlet.kill('SIGTERM')
process.on('SIGINT', stop)
process.on('SIGTERM', stop)
meshlet.on('exit', (code) => {
  for (const s of servers) s.close()
  process.exit(code ?? 0)
})
