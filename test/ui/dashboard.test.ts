// The dashboard in a real browser (issue 19): Debian's chromium driven by playwright-core (no browser download) opens
// /ui of a running meshlet, finds the Service table, sees an endpoint turn "not ready" within 3 s of its backend
// failing readiness, shows hostile text as text, and saves a screenshot in the test's directory.

import t from 'tap'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium } from 'playwright-core'
import { startMeshlet } from '../helpers/meshlet.ts'

const CHROMIUM = '/usr/bin/chromium'
const BACKEND_IP = '127.0.0.83'

function backend(): Promise<{ server: Server; port: number; healthy: { value: boolean } }> {
  const healthy = { value: true }
  const server = createServer((req, res) => {
    if (req.url === '/healthz' && !healthy.value) {
      res.statusCode = 503
      return void res.end('failing on purpose\n')
    }
    res.end('ok\n')
  })
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, BACKEND_IP, () => resolve({ server, port: (server.address() as AddressInfo).port, healthy }))
  })
}

const manifests = (port: number) => `
apiVersion: v1
kind: Pod
metadata: { name: web-1, labels: { app: web } }
spec:
  containers:
    - name: web
      ports: [{ name: http, containerPort: ${port} }]
      readinessProbe: { httpGet: { path: /healthz, port: http }, periodSeconds: 1, failureThreshold: 1 }
status: { podIP: ${BACKEND_IP} }
---
apiVersion: v1
kind: Service
metadata: { name: web }
spec:
  selector: { app: web }
  ports: [{ name: http, port: 80, targetPort: http }]
---
apiVersion: v1
kind: Service
metadata: { name: hostile }
spec:
  ports: [{ port: 81 }]
  "<img src=x onerror=document.title='pwned'>": 1
`

t.test('dashboard in chromium', { skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} not installed` }, async (t) => {
  const b = await backend()
  t.teardown(() => b.server.close())
  const m = await startMeshlet(t, { manifests: { 'web.yaml': manifests(b.port) }, args: ['--vip-mode', 'none'] })
  await m.waitForStatus((s) =>
    (s.snapshot?.services ?? []).some((svc) => svc.key === 'default/web' && svc.ports[0]?.endpoints[0]?.ready),
  )
  const profile = mkdtempSync(join(tmpdir(), 'meshlet-chromium-'))
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  })
  t.teardown(async () => {
    await context.close()
    rmSync(profile, { recursive: true, force: true })
  })
  const page = context.pages()[0] ?? (await context.newPage())
  const pageErrors: string[] = []
  page.on('pageerror', (err) => pageErrors.push(err.message))
  await page.goto(`http://${m.admin!.host}:${m.admin!.port}/ui`)

  const endpoint = `#services tr[data-service="default/web"] li[data-endpoint="${BACKEND_IP}:${b.port}"]`
  await page.waitForSelector(`${endpoint}[data-state="ready"]`, { timeout: 10_000 })
  const row = await page.locator('#services tr[data-service="default/web"] td').allTextContents()
  t.equal(row[0], 'default/web')
  t.equal(row[1], 'ClusterIP')
  t.match(row[2], /^\d+\.\d+\.\d+\.\d+$/, 'its ClusterIP')
  t.equal(row[3], '80/TCP')
  t.match(row[4], new RegExp(`${BACKEND_IP}:${b.port} ready \\(default/web-1\\)`))

  b.healthy.value = false
  const failedAt = Date.now()
  await page.waitForSelector(`${endpoint}[data-state="not ready"]`, { timeout: 3000 })
  t.ok(Date.now() - failedAt <= 3000, `not ready in the page after ${Date.now() - failedAt} ms`)
  t.match(await page.locator(endpoint).textContent(), /not ready .*503/, "the probe's last message")

  const errors = await page.locator('#errors tbody').textContent()
  t.match(errors, /unknown field "<img src=x onerror=document\.title='pwned'>"/, 'hostile text shown as text')
  t.equal(await page.locator('#errors img').count(), 0, 'no element made from it')
  t.not(await page.title(), 'pwned')
  t.match(await page.locator('#listeners tbody').textContent(), /admin/)
  await page.screenshot({ path: join(t.testdirName, 'dashboard.png'), fullPage: true })
  t.ok(existsSync(join(t.testdirName, 'dashboard.png')), 'screenshot saved')
  t.same(pageErrors, [], 'no script errors')
})
