// Big manifests never stall the process (issue 13 item 11): parsing and validation run in a worker thread, and a file
// over the 3 MiB limit is refused from its size alone. A real `meshlet up` keeps answering DNS within 50 ms while a
// 2.9 MiB file (seconds of YAML parsing) loads and while a 20 MiB file is refused.
//
// How it is judged: 9 queries in 10 within 50 ms, and none later than 1 s. Not "every query within 50 ms": on the
// shared 2-core CI machine an idle Node process alone sees scheduling gaps of 80-120 ms, so a single slow answer says
// nothing about meshlet. Before the worker, the event loop stopped for the whole parse (1.7 s for this file on an idle
// machine, 5-12 s under load; the 20 MiB file, read and parsed whole, longer): no answer at all meanwhile.

import t, { type Test } from 'tap'
import { createSocket } from 'node:dgram'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { startMeshlet, type MeshletProcess } from '../helpers/meshlet.ts'
import { decode, query, rcodeOf } from '../dns/helpers.ts'
import type { FileStatus } from '../../config/watch.ts'

/** One A query over UDP: rcode and round-trip time, or TIMEOUT after 2 s. */
function ask(port: number, name: string): Promise<{ rcode: string; ms: number }> {
  const start = performance.now()
  return new Promise((resolve) => {
    const s = createSocket('udp4')
    const timer = setTimeout(() => (s.close(), resolve({ rcode: 'TIMEOUT', ms: performance.now() - start })), 2000)
    s.on('message', (m) => {
      clearTimeout(timer)
      s.close()
      resolve({ rcode: rcodeOf(decode(m)), ms: performance.now() - start })
    })
    s.send(query(name, 'A'), port, '127.0.0.1')
  })
}

/** ConfigMaps (a kind meshlet ignores, as in the report) making a file of about `bytes`. */
function configMaps(bytes: number): string {
  const doc = (i: number) =>
    `---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c${i}\ndata:\n  a: "${'x'.repeat(100)}"\n  b: hello world\n`
  const parts: string[] = []
  let n = 0
  for (let i = 0; n < bytes; i++) {
    const d = doc(i)
    parts.push(d)
    n += d.length
  }
  return parts.join('')
}

/** The q-quantile (0..1) of `ms`. */
function quantile(ms: readonly number[], q: number): number {
  const sorted = [...ms].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))] ?? 0
}

function judge(t: Test, ms: readonly number[]): void {
  const p90 = quantile(ms, 0.9)
  const worst = Math.max(...ms)
  t.ok(ms.length >= 10, `${ms.length} queries meanwhile`)
  t.ok(p90 < 50, `9 in 10 answered within ${p90.toFixed(1)} ms (limit 50 ms; p99 ${quantile(ms, 0.99).toFixed(1)} ms)`)
  t.ok(worst < 1000, `slowest answer ${worst.toFixed(1)} ms (limit 1 s)`)
}

/** Queries DNS back to back (5 ms apart) until `done()` resolves; returns the latencies and rcodes seen. */
async function probeWhile(m: MeshletProcess, done: Promise<unknown>): Promise<{ ms: number[]; rcodes: Set<string> }> {
  let finished = false
  void done.finally(() => (finished = true))
  const ms: number[] = []
  const rcodes = new Set<string>()
  while (!finished) {
    const r = await ask(m.dns!.port, 'web.default.svc.cluster.local')
    ms.push(r.ms)
    rcodes.add(r.rcode)
    await sleep(5)
  }
  await done
  return { ms, rcodes }
}

t.test('DNS answers within 50 ms while big manifests load', { timeout: 120_000 }, async (t) => {
  const m = await startMeshlet(t, {
    manifests: { 'web.yaml': 'apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n' },
  })
  t.equal((await ask(m.dns!.port, 'web.default.svc.cluster.local')).rcode, 'NOERROR')

  await t.test('a 2.9 MiB file under the limit: parsed in the worker', async (t) => {
    const file = join(m.dir, 'big.yaml')
    const loaded = m.waitForLog(
      (l) => l.msg === 'manifests reloaded' && Array.isArray(l.changed) && l.changed.includes(file),
      60_000,
    )
    writeFileSync(file, configMaps(2.9 * 1024 * 1024))
    const { ms, rcodes } = await probeWhile(m, loaded)
    t.same([...rcodes], ['NOERROR'])
    judge(t, ms)
    const s = await m.status()
    t.ok(s.config.ignoredKinds.includes('v1 ConfigMap'), 'the file was loaded (its kind reported as ignored)')
  })

  await t.test('a 20 MiB file: refused from its size, with an error naming the file and the limit', async (t) => {
    const file = join(m.dir, 'huge.yaml')
    const refused = m.waitForStatus(
      (s) =>
        s.config.files.some((f: FileStatus) => f.file === file && /is 20\.0 MiB: the limit/.test(f.lastError ?? '')),
      60_000,
    )
    writeFileSync(file, configMaps(20 * 1024 * 1024))
    // At least 2 s of queries: the refusal itself is quick, the point is that nothing else happens meanwhile.
    const { ms, rcodes } = await probeWhile(m, Promise.all([refused, sleep(2000)]))
    t.same([...rcodes], ['NOERROR'])
    judge(t, ms)
    const s = await refused
    const f = s.config.files.find((x: FileStatus) => x.file === file)
    t.match(f?.lastError, `${file}: file is 20.0 MiB: the limit is 3.0 MiB per file`)
  })
})
