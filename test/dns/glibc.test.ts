// The glibc resolver as a container uses it (specs/dns.md §8.1): a network namespace whose /etc/netns/NAME/resolv.conf
// points at meshlet (search list + ndots:5), reached over a veth pair with 198.18.0.0/15 addresses. getent and curl
// inside resolve short names through the search path. Needs root (CI runs as root); skipped otherwise.

import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { promisify } from 'node:util'
import { FIXTURE, fakeUpstream, startPlane } from './helpers.ts'
import { renderResolvConf } from '../../dns/resolv-conf.ts'

const run = promisify(execFile)

// Skipped, and reported as skipped, when not root; .ci/run fails when a test is skipped under root.
const skip = process.getuid?.() !== 0 ? 'needs root for ip netns (CI runs as root)' : false

t.test('getent and curl inside a network namespace resolve through meshlet', { skip }, async (t) => {
  const id = process.pid % 10000
  const ns = `mdns${process.pid}`
  const hostIf = `mdh${id}`
  const nsIf = `mdn${id}`
  const net = 64 + (process.pid % 120) // 198.19.<net>.0/30
  const hostIp = `198.19.${net}.1`
  const nsIp = `198.19.${net}.2`
  const cleanup = async () => {
    await run('ip', ['netns', 'del', ns]).catch(() => {})
    await run('ip', ['link', 'del', hostIf]).catch(() => {})
    rmSync(`/etc/netns/${ns}`, { recursive: true, force: true })
  }
  await cleanup()
  t.teardown(cleanup)
  await run('ip', ['netns', 'add', ns])
  await run('ip', ['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf])
  await run('ip', ['link', 'set', nsIf, 'netns', ns])
  await run('ip', ['addr', 'add', `${hostIp}/30`, 'dev', hostIf])
  await run('ip', ['link', 'set', hostIf, 'up'])
  await run('ip', ['netns', 'exec', ns, 'ip', 'addr', 'add', `${nsIp}/30`, 'dev', nsIf])
  await run('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', nsIf, 'up'])
  await run('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up'])
  mkdirSync(`/etc/netns/${ns}`, { recursive: true })
  writeFileSync(
    `/etc/netns/${ns}/resolv.conf`,
    renderResolvConf({ namespace: 'default', nameserver: hostIp, clusterDomain: 'cluster.local' }),
  )
  writeFileSync(`/etc/netns/${ns}/hosts`, '127.0.0.1 localhost\n')

  // An HTTP server on the host side of the veth, published as the headless Service "api" (its endpoint address).
  const http = createServer((_req, res) => res.end('hello from api\n'))
  await new Promise<void>((r) => http.listen(0, hostIp, () => r()))
  t.teardown(() => new Promise<void>((r) => http.close(() => r())))
  const httpPort = (http.address() as { port: number }).port
  const api = `
apiVersion: v1
kind: Service
metadata: { name: api, namespace: default }
spec:
  clusterIP: None
  ports: [{ name: http, port: ${httpPort} }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: api-1, namespace: default, labels: { kubernetes.io/service-name: api } }
addressType: IPv4
ports: [{ name: http, port: ${httpPort}, protocol: TCP }]
endpoints: [{ addresses: ["${hostIp}"] }]
`
  const up = await fakeUpstream(t)
  const dns = await startPlane(t, {
    host: hostIp,
    port: 53,
    yaml: `${FIXTURE}\n---\n${api}`,
    upstreams: [`127.0.0.1:${up.port}`],
  })
  t.equal(dns.port, 53)
  const inNs = (cmd: string[]) => run('ip', ['netns', 'exec', ns, ...cmd], { timeout: 20000 })

  const web = await inNs(['getent', 'ahosts', 'web'])
  t.match(web.stdout, /^10\.96\.0\.10\s+STREAM web\.default\.svc\.cluster\.local/m, 'getent ahosts web')
  const db = await inNs(['getent', 'hosts', 'db.data'])
  t.match(db.stdout, /^10\.244\.2\.1[01]\s+db\.data\.svc\.cluster\.local/m, 'getent hosts db.data')
  const v6 = await inNs(['getent', 'ahosts', 'v6'])
  t.match(v6.stdout, /10\.96\.0\.11/, 'dual stack: IPv4 address')
  t.match(v6.stdout, /fd00:96::11/, 'dual stack: IPv6 address')
  const fqdn = await inNs(['getent', 'ahosts', 'web.default.svc.cluster.local.'])
  t.match(fqdn.stdout, /10\.96\.0\.10/)
  const curl = await inNs(['curl', '-sS', '--max-time', '10', `http://api:${httpPort}/`])
  t.equal(curl.stdout, 'hello from api\n', 'curl resolves the short name and connects')
  // An external name walks the search list in-zone (answered locally), then the bare name goes upstream.
  up.seen.length = 0
  const ext = await inNs(['getent', 'ahosts', 'www.example.org'])
  t.match(ext.stdout, /192\.0\.2\.1/)
  t.ok(
    up.seen.length > 0 && up.seen.every((s) => s.name.toLowerCase() === 'www.example.org'),
    'only the bare name was forwarded',
  )
  const missing = await inNs(['getent', 'ahosts', 'nothing-here']).catch((e: { code: number }) => e)
  t.equal((missing as { code?: number }).code, 2, 'unknown short name: getent exit 2 (not found)')
})
