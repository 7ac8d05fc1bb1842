// A stand-in for traefik/whoami in the end-to-end test, run inside a backend namespace:
//   GET /…          200 "Hostname: NAME\n…"  (every path, as whoami answers)
//   GET /health     the status code last set (200 at start)
//   POST /health    body "500" (or any code) sets it
// Usage: node fixture-backend.ts NAME [PORT]
import { createServer } from 'node:http'

const name = process.argv[2] ?? 'backend'
const port = Number(process.argv[3] ?? 80)
let health = 200
const server = createServer((req, res) => {
  if (req.url === '/health') {
    if (req.method === 'POST') {
      let body = ''
      req.setEncoding('utf8')
      req.on('data', (c: string) => (body += c))
      req.on('end', () => {
        const code = Number(body.trim())
        if (Number.isInteger(code) && code >= 100 && code <= 599) health = code
        res.end(`health ${health}\n`)
      })
      return
    }
    res.statusCode = health
    res.end(`health ${health}\n`)
    return
  }
  req.resume()
  res.setHeader('content-type', 'text/plain')
  res.end(`Hostname: ${name}\nGET ${req.url}\nHost: ${req.headers.host ?? ''}\n`)
})
server.keepAliveTimeout = 30000
server.listen(port, '0.0.0.0', () => process.stdout.write('listening\n'))
process.on('SIGTERM', () => server.close(() => process.exit(0)))
