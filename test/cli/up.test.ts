// `meshlet up` as a real process: admin API, reload valid → broken → fixed with the last good state serving,
// exit codes, environment variables, SIGTERM.

import t from 'tap'
import { spawnSync, execFileSync } from 'node:child_process'
import { createServer } from 'node:net'
import { MESHLET_BIN, startMeshlet } from '../helpers/meshlet.ts'
import { serviceOf } from '../helpers/status.ts'

const web = (port: number) => `
apiVersion: v1
kind: Service
metadata: { name: web }
spec:
  clusterIP: None
  ports: [{ name: http, port: ${port} }]
---
apiVersion: v1
kind: Endpoints
metadata: { name: web }
subsets: [{ addresses: [{ ip: 127.0.0.51 }], ports: [{ name: http, port: 8080 }] }]
`

function dig(server: { host: string; port: number }, name: string): string {
  return execFileSync('dig', [`@${server.host}`, '-p', String(server.port), '+short', '+time=2', '+tries=1', name], {
    encoding: 'utf8',
  }).trim()
}

t.test('admin API over real HTTP', async (t) => {
  const m = await startMeshlet(t, { manifests: { 'web.yaml': web(80) } })
  const base = `http://${m.admin!.host}:${m.admin!.port}`
  const healthz = await fetch(`${base}/healthz`)
  t.equal(healthz.status, 200)
  t.equal(await healthz.text(), 'ok\n')
  t.equal((await fetch(`${base}/readyz`)).status, 200)
  const status = await m.status()
  t.equal(status.meshlet.node, 'test-node')
  t.equal(status.meshlet.ready, true)
  const svc = serviceOf(status, 'default/web')
  t.same(
    svc?.ports[0]?.endpoints.map((e) => [e.ip, e.port, e.ready]),
    [['127.0.0.51', 8080, true]],
  )
  t.ok(status.planes.dns && status.planes.lb && status.planes.health, 'every plane reports its status')
  const metrics = await m.metrics()
  t.match(metrics, /meshlet_objects\{kind="Service"\} 1/)
  t.match(metrics, /meshlet_config_reloads_total\{result="ok"\} 1/)
  t.match(metrics, /meshlet_process_cpu_seconds_total/)
  t.equal((await fetch(`${base}/nope`)).status, 404)
  t.equal((await fetch(`${base}/status`, { method: 'POST' })).status, 405)
})

t.test('reload: valid → broken → fixed, the last good state keeps serving', async (t) => {
  const m = await startMeshlet(t, { manifests: { 'web.yaml': web(80) } })
  if (m.dns) t.equal(dig(m.dns, 'web.default.svc.cluster.local'), '127.0.0.51')

  // Broken YAML: the file keeps its previous objects; the error is in /status.
  m.writeManifest('web.yaml', web(80) + '\n---\nkind: [unclosed\n')
  const broken = await m.waitForStatus((s) => s.snapshot.errors.length > 0, 5000)
  t.match(JSON.stringify(broken.snapshot.errors), /web\.yaml/)
  t.ok(serviceOf(broken, 'default/web'), 'the Service is still there')
  if (m.dns) t.equal(dig(m.dns, 'web.default.svc.cluster.local'), '127.0.0.51', 'DNS still answers it')

  // An invalid object keeps its last good version.
  m.writeManifest('web.yaml', web(0))
  const invalid = await m.waitForStatus((s) => JSON.stringify(s.snapshot.errors).includes('spec.ports[0].port'), 5000)
  t.equal(serviceOf(invalid, 'default/web')?.ports[0]?.port, 80, 'last good version serves')
  // Beside its code, the error says what to do (the catalogue's fix, added when /status is written).
  const rangeError = invalid.snapshot.errors.find((e) => e.path === 'spec.ports[0].port')
  t.equal(rangeError?.code, 'MLT_CONFIG_RANGE')
  const fix = (rangeError as { fix?: string } | undefined)?.fix
  t.match(fix, /^bring the number into the range/, '/status carries the what-to-do beside the code')

  // Fixed: the error clears and the new version applies within 1 s.
  const fixedAt = Date.now()
  m.writeManifest('web.yaml', web(81))
  const fixed = await m.waitForStatus(
    (s) => s.snapshot.errors.length === 0 && serviceOf(s, 'default/web')?.ports[0]?.port === 81,
    5000,
  )
  t.ok(Date.now() - fixedAt < 1500, `applied in ${Date.now() - fixedAt} ms`)
  t.ok(fixed.config, 'config status present')
})

t.test('SIGTERM stops cleanly with exit code 0', async (t) => {
  const m = await startMeshlet(t, { manifests: { 'web.yaml': web(80) } })
  const started = Date.now()
  t.equal(await m.stop('SIGTERM'), 0)
  t.ok(Date.now() - started < 12000)
})

t.test('flags from MESHLET_* environment variables', async (t) => {
  const m = await startMeshlet(t, {
    manifests: { 'web.yaml': web(80) },
    env: { MESHLET_NODE: 'from-env' },
    args: ['--node', 'from-env'],
  })
  t.equal((await m.status()).meshlet.node, 'from-env')
  const r = spawnSync(process.execPath, [MESHLET_BIN, 'up', '--help'], { encoding: 'utf8' })
  t.equal(r.status, 0)
  t.match(r.stdout, /MESHLET_VIP_MODE/)
})

t.test('exit codes', async (t) => {
  const run = (args: string[], env: NodeJS.ProcessEnv = {}) =>
    spawnSync(process.execPath, [MESHLET_BIN, ...args], {
      encoding: 'utf8',
      timeout: 20000,
      env: { ...process.env, ...env },
    })
  t.equal(run([]).status, 2, 'no command: usage')
  t.equal(run(['frobnicate']).status, 2, 'unknown command')
  t.equal(run(['up']).status, 2, 'up without -f')
  t.equal(run(['up', '-f', 'x.yaml', '--vip-mode', 'magic']).status, 2, 'bad flag value')
  t.equal(run(['up', '-f', 'x.yaml', '--dns', 'nowhere']).status, 2, 'bad listen address')
  t.equal(
    run([
      'up',
      '--admin',
      '127.0.0.1:0',
      '--dns',
      'off',
      '--http',
      'off',
      '--https',
      'off',
      '-f',
      '/nonexistent/meshlet.yaml',
    ]).status,
    1,
    'unreadable path',
  )
  t.match(run(['version']).stdout, /^meshlet \d+\.\d+\.\d+/)

  // A listener that cannot open at start: the admin port is taken.
  const blocker = createServer()
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r))
  t.teardown(() => blocker.close())
  const port = (blocker.address() as { port: number }).port
  const r = run([
    'up',
    '-f',
    '-',
    '--admin',
    `127.0.0.1:${port}`,
    '--dns',
    'off',
    '--http',
    'off',
    '--https',
    'off',
    '--vip-mode',
    'none',
  ])
  t.equal(r.status, 1, 'admin port in use')
})

t.test('resolv-conf prints what a client container needs', async (t) => {
  const r = spawnSync(
    process.execPath,
    [MESHLET_BIN, 'resolv-conf', '--namespace', 'shop', '--nameserver', '198.18.0.2'],
    { encoding: 'utf8' },
  )
  t.equal(r.status, 0)
  t.match(r.stdout, /nameserver 198\.18\.0\.2/)
  t.match(r.stdout, /search shop\.svc\.cluster\.local svc\.cluster\.local cluster\.local/)
  t.match(r.stdout, /ndots:5/)
})
