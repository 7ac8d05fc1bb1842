// `meshlet up` end to end: a watched manifest directory edited while running — a broken edit keeps the last good
// objects and shows the error in /status; the fix clears it.

import t from 'tap'
import { existsSync } from 'node:fs'
import { startMeshlet } from '../helpers/meshlet.ts'

// bin/meshlet.ts loads every plane at start; until they have all landed `up` cannot run.
const planes = ['dns', 'lb', 'proxy', 'health'].map((c) => new URL(`../../${c}/index.ts`, import.meta.url))
const missing = planes.filter((u) => !existsSync(u)).map((u) => u.pathname)

const svc = (name: string, port: number) =>
  `apiVersion: v1\nkind: Service\nmetadata:\n  name: ${name}\nspec:\n  clusterIP: None\n  ports:\n  - port: ${port}\n`

t.test(
  'reload through the real CLI: valid → broken → fixed',
  { skip: missing.length > 0 ? `not yet written: ${missing.join(', ')}` : false },
  async (t) => {
    const m = await startMeshlet(t, {
      manifests: { 'web.yaml': svc('web', 80) },
      args: ['--dns', 'off', '--http', 'off', '--https', 'off'],
    })
    const first = await m.status()
    t.ok(
      first.config.files.some((f: { file: string; objects: number }) => f.file.endsWith('web.yaml') && f.objects === 1),
      'file listed in /status',
    )

    m.writeManifest('web.yaml', svc('web', 0))
    const broken = await m.waitForStatus(
      (s) => s.config.files.some((f: { lastError: string | null }) => f.lastError !== null),
      10_000,
    )
    const f = broken.config.files.find((x) => x.file.endsWith('web.yaml'))!
    t.match(f.lastError, /web\.yaml doc 1 \(Service default\/web\): spec\.ports\[0\]\.port: must be 1-65535, got 0/)
    t.equal(f.objects, 1, 'last good version kept')
    t.ok(broken.config.reloads.at(-1)?.ok === false)

    m.writeManifest('web.yaml', svc('web', 81))
    const fixed = await m.waitForStatus(
      (s) => s.config.files.every((x: { lastError: string | null }) => x.lastError === null),
      10_000,
    )
    t.ok(fixed.config.reloads.at(-1)?.ok)
    t.equal(await m.stop(), 0)
  },
)
