// --dns-workers N: N worker threads on one address (SO_REUSEPORT), each with its own zone from every Snapshot, the
// forwarder on the main thread. Readiness only once every worker serves the first Snapshot; queries spread over the
// workers; forwarded names through the main thread; close() releases the address. The conformance and transport
// suites are run again in this mode (DNS_TEST_WORKERS=2), and the CLI flag end to end.

import t from 'tap'
import dgram from 'node:dgram'
import net from 'node:net'
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { startMeshlet, MESHLET_BIN } from '../helpers/meshlet.ts'
import { FIXTURE, datas, decode, dig, eventually, fakeUpstream, query, rcodeOf, startPlane, udpRaw } from './helpers.ts'

const run = promisify(execFile)
const Z = 'cluster.local'

interface WorkerStatus {
  readonly worker: number
  readonly listening: boolean
  readonly snapshotVersion: number
  readonly queries: number
}

t.test(
  'two workers: ready after both apply the Snapshot, queries spread, forwarding through the main thread',
  async (t) => {
    const up = await fakeUpstream(t)
    const dns = await startPlane(t, { yaml: null, workers: 2, upstreams: [`127.0.0.1:${up.port}`] })
    t.equal(dns.plane.ready(), false, 'not ready before the first Snapshot')
    const early = decode((await udpRaw(dns.port, query(`web.default.svc.${Z}`, 'A')))!)
    t.equal(rcodeOf(early), 'SERVFAIL', 'in-zone SERVFAIL before the first Snapshot')
    await dns.setYaml(FIXTURE)
    t.equal(dns.plane.ready(), true)
    const st = () =>
      dns.plane.status() as { workers: WorkerStatus[]; snapshotVersion: number; listeners: { port: number }[] }
    t.equal(st().workers.length, 2)
    t.ok(
      st().workers.every((w) => w.listening && w.snapshotVersion === st().snapshotVersion),
      'every worker serves the current Snapshot',
    )
    // Every query from a new socket (a new source port): the kernel spreads them over both workers.
    const answers = await Promise.all(
      Array.from({ length: 200 }, () => udpRaw(dns.port, query(`web.default.svc.${Z}`, 'A'), 4000)),
    )
    t.equal(answers.filter((a) => a && decode(a).answers?.length === 1).length, 200, 'every query answered')
    const per = st().workers.map((w) => w.queries)
    t.ok(
      per.every((n) => n > 10),
      `both workers answered (${per.join(', ')})`,
    )
    // Forwarded and cached through the main thread, over UDP and TCP.
    t.same(datas(await dig(dns.port, 'www.example.org', 'A'), 'A'), ['192.0.2.1'])
    t.same(datas(await dig(dns.port, 'www.example.org', 'A', ['+tcp']), 'A'), ['192.0.2.1'])
    t.equal(
      up.seen.filter((s) => s.name === 'www.example.org').length,
      1,
      'one upstream query, the second answer from the shared cache',
    )
    t.same(datas(await dig(dns.port, `ext.default.svc.${Z}`, 'A'), 'A'), ['192.0.2.1'], 'ExternalName chased')
    // A change reaches every worker: all of 50 queries (spread over both) see it.
    const version = st().snapshotVersion
    dns.store.setObjects(
      [
        ...(await import('./helpers.ts')).objectsOf(
          `${FIXTURE}\n---\napiVersion: v1\nkind: Service\nmetadata: { name: late }\nspec:\n  clusterIP: 10.96.0.77\n  ports: [{ port: 80 }]\n`,
        ),
      ],
      [],
    )
    t.ok(await eventually(() => st().snapshotVersion > version, 5000), 'every worker applied the change')
    const late = await Promise.all(
      Array.from({ length: 50 }, () => udpRaw(dns.port, query(`late.default.svc.${Z}`, 'A'), 4000)),
    )
    t.equal(late.filter((a) => a && rcodeOf(decode(a)) === 'NOERROR').length, 50, 'the new Service from every worker')
    const metrics = await dns.metrics.metrics()
    const m = /meshlet_dns_queries_total\{type="A",rcode="NOERROR"\} (\d+)/.exec(metrics)
    t.ok(m && Number(m[1]) >= 250, `worker counters reach /metrics (${m?.[1]})`)
  },
)

t.test('close() drains the workers and frees the address', async (t) => {
  const dns = await startPlane({ teardown: () => {} }, { workers: 2 })
  const port = dns.port
  t.same(datas(await dig(port, `web.default.svc.${Z}`, 'A'), 'A'), ['10.96.0.10'])
  const conn = net.connect({ host: '127.0.0.1', port })
  await new Promise<void>((r) => conn.once('connect', () => r()))
  const ended = new Promise<void>((r) => conn.once('close', () => r()))
  conn.on('error', () => {})
  await dns.plane.close(Date.now() + 1000)
  await ended
  t.pass('open TCP connection closed')
  // Nothing holds the port any more: exclusive binds succeed.
  const u = dgram.createSocket('udp4')
  await new Promise<void>((resolve, reject) => (u.once('error', reject), u.bind(port, '127.0.0.1', () => resolve())))
  u.close()
  const s = net.createServer()
  await new Promise<void>((resolve, reject) => (s.once('error', reject), s.listen(port, '127.0.0.1', () => resolve())))
  s.close()
  t.pass('UDP and TCP port free after close')
})

const here = fileURLToPath(new URL('.', import.meta.url))
for (const file of ['conformance.test.ts', 'transport.test.ts']) {
  t.test(`${file} with --dns-workers 2`, async (t) => {
    const r = await run(process.execPath, [`${here}${file}`], {
      env: { ...process.env, DNS_TEST_WORKERS: '2' },
      maxBuffer: 64 * 1024 * 1024,
    }).then(
      (x) => ({ code: 0, out: x.stdout }),
      (e: { code: number; stdout: string }) => ({ code: e.code, out: e.stdout }),
    )
    const failures = r.out.split('\n').filter((l) => /^\s*not ok /.test(l))
    t.equal(r.code, 0, `${file} passes in worker mode`)
    t.same(failures.slice(0, 20), [], 'no failing assertion')
    t.match(r.out, /# \{?.*pass|^1\.\.\d+/m, 'the suite ran')
  })
}

const planesPresent = ['lb', 'proxy', 'health'].every((c) =>
  existsSync(new URL(`../../${c}/index.ts`, import.meta.url)),
)

t.test(
  'meshlet up --dns-workers 2',
  { skip: planesPresent ? false : 'skipped: not every plane exists yet' },
  async (t) => {
    const up = await fakeUpstream(t)
    const m = await startMeshlet(t, {
      manifests: { 'cluster.yaml': FIXTURE },
      args: ['--upstream', `127.0.0.1:${up.port}`, '--dns-workers', '2'],
      // The fixture's ClusterIPs (10.96.0.0/16) are not on this host, so lb stays not ready: wait for DNS's own
      // listener line (startMeshlet reads it) instead of /readyz.
      waitReady: false,
    })
    const port = m.dns!.port
    t.same(datas(await dig(port, `web.default.svc.${Z}`, 'A'), 'A'), ['10.96.0.10'])
    t.same(datas(await dig(port, `web.default.svc.${Z}`, 'A', ['+tcp']), 'A'), ['10.96.0.10'])
    t.same(datas(await dig(port, 'www.example.org', 'A'), 'A'), ['192.0.2.1'])
    const status = await m.status()
    t.equal(status.planes.dns?.ready, true)
    t.equal(status.planes.dns?.workers?.length, 2)
    const bad = await run(process.execPath, [MESHLET_BIN, 'up', '-f', '/dev/null', '--dns-workers', '0']).then(
      () => 0,
      (e: { code: number }) => e.code,
    )
    t.equal(bad, 2, '--dns-workers 0 is a usage error')
  },
)
