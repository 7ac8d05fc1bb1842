// An upstream with no route must cost only the queries sent to it. Node calls dgram's connect callback even after the
// connect failed (ENETUNREACH), and a send() on the unconnected socket then threw ERR_SOCKET_BAD_PORT out of a
// callback, which took the whole process down on the first forwarded query. Reproduced in a network namespace this
// test creates, with loopback up and no other route: 192.0.2.1 (TEST-NET-1) is unreachable there, so no packet
// leaves. As root only (CI runs as root).

import t from 'tap'
import { startMeshlet } from '../helpers/meshlet.ts'
import { cleanupList, exec, inNs, must } from '../helpers/netns.ts'

const skip = process.getuid?.() === 0 ? false : 'needs root (network namespaces)'

t.test('an upstream without a route: SERVFAIL, and the process keeps serving', { skip, timeout: 90_000 }, async (t) => {
  const cleanup = cleanupList(t)
  const ns = `mlt-unr-${process.pid}`
  await must(['ip', 'netns', 'add', ns])
  cleanup.push(() => exec(['ip', 'netns', 'del', ns]))
  await must(['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up'])

  const m = await startMeshlet(t, {
    manifests: {
      'svc.yaml': `apiVersion: v1
kind: Service
metadata: { name: web }
spec: { ports: [{ port: 80 }] }
`,
    },
    wrap: ['ip', 'netns', 'exec', ns],
    waitReady: false,
    args: [
      '--upstream',
      '192.0.2.1:53',
      '--admin',
      'off',
      '--http',
      'off',
      '--https',
      'off',
      '--l4-mode',
      'userspace',
      '--vip-mode',
      'none',
    ],
  })
  const dig = async (name: string) => {
    const r = await inNs(ns, ['dig', '@127.0.0.1', '-p', String(m.dns!.port), '+tries=1', '+time=5', name], 15_000)
    return /status: (\w+)/.exec(r.stdout)?.[1] ?? `dig exit ${r.code}`
  }
  for (let i = 0; i < 3; i++) t.equal(await dig(`out-of-zone-${i}.example.`), 'SERVFAIL', `forward ${i}: SERVFAIL`)
  t.equal(m.proc.exitCode, null, 'meshlet is still running')
  t.equal(await dig('web.default.svc.cluster.local.'), 'NOERROR', 'in-zone names still answered')
})
