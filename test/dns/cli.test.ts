// The DNS plane in the real CLI: `meshlet up` on loopback port 0, queried with dig; /status and /metrics; a manifest
// change visible in answers; `meshlet resolv-conf`.

import t from 'tap'
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { promisify } from 'node:util'
import { startMeshlet, MESHLET_BIN } from '../helpers/meshlet.ts'
import { FIXTURE, datas, dig, eventually, fakeUpstream } from './helpers.ts'

const run = promisify(execFile)

t.test('meshlet resolv-conf', async (t) => {
  const { stdout } = await run(process.execPath, [
    MESHLET_BIN,
    'resolv-conf',
    '--namespace',
    'data',
    '--nameserver',
    '198.18.0.1',
  ])
  t.match(stdout, /^nameserver 198\.18\.0\.1$/m)
  t.match(stdout, /^search data\.svc\.cluster\.local svc\.cluster\.local cluster\.local$/m)
  t.match(stdout, /^options ndots:5$/m)
  const def = await run(process.execPath, [MESHLET_BIN, 'resolv-conf'])
  t.match(def.stdout, /^search default\.svc\.cluster\.local /m, 'namespace defaults to "default"')
})

// The CLI loads every plane; until all of them exist in the tree it cannot start.
const planesPresent = ['lb', 'proxy', 'health'].every((c) =>
  existsSync(new URL(`../../${c}/index.ts`, import.meta.url)),
)

t.test(
  'meshlet up serves the zone over UDP and TCP',
  { skip: planesPresent ? false : 'skipped: not every plane exists yet (lb/index.ts)' },
  async (t) => {
    const up = await fakeUpstream(t)
    const m = await startMeshlet(t, {
      manifests: { 'cluster.yaml': FIXTURE },
      args: ['--upstream', `127.0.0.1:${up.port}`, '--dns-ttl', '7'],
      // The fixture's ClusterIPs (10.96.0.0/16) are not on this host, so lb stays not ready: wait for DNS's own
      // listener line (startMeshlet reads it) instead of /readyz.
      waitReady: false,
    })
    t.ok(m.dns, 'dns listener logged')
    const port = m.dns!.port
    const a = await dig(port, 'web.default.svc.cluster.local', 'A')
    t.same(datas(a, 'A'), ['10.96.0.10'])
    t.equal(a.answer[0]?.ttl, 7, '--dns-ttl honoured')
    const tcp = await dig(port, 'db.data.svc.cluster.local', 'A', ['+tcp'])
    // db-2's readiness depends on the health plane's probe; db-0 and db-1 have no probe and are ready.
    t.ok(
      ['10.244.2.10', '10.244.2.11'].every((ip) => datas(tcp, 'A').includes(ip)),
      'headless answer over TCP',
    )
    const ext = await dig(port, 'www.example.org', 'A')
    t.same(datas(ext, 'A'), ['192.0.2.1'])
    const status = await m.status()
    const plane = status.planes.dns!
    t.equal(plane.ready, true)
    t.equal(plane.listeners[0]?.port, port)
    t.equal(plane.upstreams[0]?.address, `127.0.0.1:${up.port}`)
    t.equal(plane.upstreams[0]?.state, 'ok')
    t.ok(plane.names > 10)
    const metrics = await m.metrics()
    t.match(metrics, /meshlet_dns_queries_total\{type="A",rcode="NOERROR"\} \d+/)
    m.writeManifest(
      'late.yaml',
      'apiVersion: v1\nkind: Service\nmetadata: { name: late }\nspec:\n  clusterIP: 10.96.0.99\n  ports: [{ port: 80 }]\n',
    )
    t.ok(
      await eventually(
        async () => datas(await dig(port, 'late.default.svc.cluster.local', 'A'), 'A')[0] === '10.96.0.99',
        10000,
        100,
      ),
      'a new manifest is answered',
    )
    t.equal(up.seen.filter((s) => s.name.endsWith('cluster.local')).length, 0, 'nothing in-zone forwarded')
  },
)
