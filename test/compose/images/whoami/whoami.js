// whoami stand-in: the response text follows traefik/whoami (Hostname, IP lines, RemoteAddr, request line, headers).
'use strict'
const http = require('node:http')
const os = require('node:os')

let health = 200
const name = process.env.WHOAMI_NAME || ''
const port = Number(process.env.WHOAMI_PORT_NUMBER || 80)

function addresses() {
  const out = []
  for (const list of Object.values(os.networkInterfaces())) for (const a of list || []) out.push(a.address)
  return out
}

http
  .createServer((req, res) => {
    if (req.url === '/health') {
      if (req.method === 'POST') {
        let body = ''
        req.on('data', (c) => (body += c))
        req.on('end', () => {
          const code = Number(body.trim())
          if (code >= 100 && code < 600) health = code
          res.end()
        })
        return
      }
      res.writeHead(health)
      res.end()
      return
    }
    const lines = []
    if (name) lines.push(`Name: ${name}`)
    lines.push(`Hostname: ${os.hostname()}`)
    for (const ip of addresses()) lines.push(`IP: ${ip}`)
    lines.push(`RemoteAddr: ${req.socket.remoteAddress}:${req.socket.remotePort}`)
    lines.push(`${req.method} ${req.url} HTTP/${req.httpVersion}`)
    for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`)
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' })
    res.end(lines.join('\n') + '\n')
  })
  .listen(port, () => console.log(`listening on :${port}`))

// docker stop sends SIGTERM: close at once, as whoami does.
process.on('SIGTERM', () => process.exit(0))
