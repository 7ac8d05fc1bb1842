// Strict fields (issue 19): a misspelt field is a warning with its path in `check` and `up` (logged once, shown in
// /status), an error in `check --strict`; fields of the Kubernetes API meshlet ignores are not flagged.

import t from 'tap'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { MESHLET_BIN, startMeshlet } from '../helpers/meshlet.ts'

const misspelt = `
apiVersion: v1
kind: Service
metadata: { name: web }
spec:
  selectr: { app: web }
  sessionAffinity: ClientIP        # Kubernetes API, ignored by meshlet: not unknown
  sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } }
  ports: [{ port: 80 }]
---
apiVersion: v1
kind: Pod
metadata: { name: web-1, labels: { app: web } }
spec:
  volumes: [{ name: data, emptyDir: {} }]
  containers: [{ name: web, image: nginx, volumeMounts: [{ name: data, mountPath: /data }] }]
status: { podIP: 127.0.0.61 }
`

function check(args: string[]) {
  return spawnSync(process.execPath, [MESHLET_BIN, 'check', ...args], { encoding: 'utf8', timeout: 30_000 })
}

t.test('check warns, check --strict fails, naming the path', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'meshlet-strict-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'svc.yaml')
  writeFileSync(file, misspelt)
  const loose = check(['-f', file])
  t.equal(loose.status, 0, loose.stderr)
  t.match(loose.stderr, /warning: .*svc\.yaml doc 1 \(Service default\/web\): spec\.selectr: unknown field "selectr"/)
  t.match(loose.stderr, /did you mean "selector"\?/)
  t.notMatch(
    loose.stderr + loose.stdout,
    /sessionAffinity|volumes|volumeMounts/,
    'API fields meshlet ignores are known',
  )
  const strict = check(['--strict', '-f', file])
  t.equal(strict.status, 1)
  t.match(strict.stdout, /spec\.selectr: unknown field "selectr"/)
  t.match(strict.stderr, /1 error\(s\)/)

  const json = join(dir, 'dup.json')
  writeFileSync(
    json,
    '{"apiVersion":"v1","kind":"Service","metadata":{"name":"j"},"spec":{"ports":[{"port":80,"port":81}]}}',
  )
  const dup = check(['--strict', '-f', json])
  t.equal(dup.status, 1)
  t.match(dup.stdout, /spec\.ports\[0\]\.port: duplicate field "port"/)
})

t.test('up logs the warning once and shows it in /status, and still serves the object', async (t) => {
  const m = await startMeshlet(t, { manifests: { 'svc.yaml': misspelt } })
  const line = await m.waitForLog((l) => l.code === 'MLT_CONFIG_UNKNOWN_FIELD')
  t.match(String(line.msg), /spec\.selectr: unknown field "selectr"/)
  t.equal(m.logs.filter((l) => l.code === 'MLT_CONFIG_UNKNOWN_FIELD').length, 1, 'logged once')
  const status = await m.status()
  t.match(JSON.stringify(status.config), /spec\.selectr: unknown field/)
  t.ok(
    status.snapshot?.services.some((s) => s.key === 'default/web'),
    'the Service is used as if the field were absent',
  )
})
