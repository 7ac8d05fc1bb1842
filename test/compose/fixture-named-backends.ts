// Several whoami-like backends in one process, each on its own address (the two-node test runs one per node
// namespace, the Pods of that node): every request gets 200 "Hostname: NAME\n".
// Usage: node fixture-named-backends.ts NAME=ADDR:PORT [NAME=ADDR:PORT ...]; prints "listening" when all are up.
import { createServer, type Server } from 'node:http'

const servers: Server[] = []
await Promise.all(
  process.argv.slice(2).map((arg) => {
    const m = /^([^=]+)=([^:]+):(\d+)$/.exec(arg)
    if (!m) throw new Error(`bad argument ${arg}: NAME=ADDR:PORT`)
    const name = m[1]!
    const server = createServer((req, res) => {
      req.resume()
      res.setHeader('content-type', 'text/plain')
      res.end(`Hostname: ${name}\nGET ${req.url}\n`)
    })
    servers.push(server)
    return new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(Number(m[3]), m[2], () => resolve())
    })
  }),
)
process.stdout.write('listening\n')
process.on('SIGTERM', () => {
  for (const s of servers) s.close()
  process.exit(0)
})
