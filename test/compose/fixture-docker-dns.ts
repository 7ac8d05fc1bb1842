// The fake Docker embedded DNS as a process, for the end-to-end test: run inside meshlet's namespace on 127.0.0.11:53
// (where Docker's resolver sits in a container). Commands on stdin, one per line, each answered "ok" on stdout:
//   set NAME IP[,IP...]      replace the replicas of NAME ("set NAME -" for none: NXDOMAIN)
//   mode answer|silent|servfail
//   queries                  print the number of queries seen
import { createInterface } from 'node:readline'
import { startFakeDockerDns, type FakeMode } from './fake-docker-dns.ts'

const host = process.argv[2] ?? '127.0.0.11'
const port = Number(process.argv[3] ?? 53)
const dns = await startFakeDockerDns(host, port)
process.stdout.write(`listening ${dns.address}\n`)
for await (const line of createInterface({ input: process.stdin })) {
  const [cmd, a, b] = line.trim().split(/\s+/)
  if (cmd === 'set' && a) dns.set(a, b && b !== '-' ? b.split(',') : [])
  else if (cmd === 'mode' && a) dns.mode = a as FakeMode
  else if (cmd === 'queries') process.stdout.write(`${dns.queries.length}\n`)
  process.stdout.write('ok\n')
}
await dns.close()
