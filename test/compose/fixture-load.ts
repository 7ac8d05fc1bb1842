// Bounded HTTP load for the end-to-end test, run inside a client namespace with autocannon. Prints one JSON line:
// the time of every failed request (connection error, timeout, non-2xx), so the test can tell failures before an
// ejection from failures after it.
// Usage: node fixture-load.ts URL SECONDS CONNECTIONS [HOST_HEADER]
import { createRequire } from 'node:module'
import type { EventEmitter } from 'node:events'

// autocannon ships no types; only its event interface is used.
const autocannon = createRequire(import.meta.url)('autocannon') as (opts: Record<string, unknown>) => EventEmitter

const [url, seconds, connections, host] = process.argv.slice(2)
const failures: number[] = []
let ok = 0
const instance = autocannon({
  url: url!,
  duration: Number(seconds ?? 5),
  connections: Number(connections ?? 4),
  timeout: 2,
  ...(host ? { headers: { host } } : {}),
})
instance.on('response', (_client: unknown, statusCode: number) => {
  if (statusCode >= 200 && statusCode < 300) ok++
  else failures.push(Date.now())
})
instance.on('reqError', () => failures.push(Date.now()))
instance.on('done', () => {
  process.stdout.write(JSON.stringify({ ok, failures }) + '\n')
})
