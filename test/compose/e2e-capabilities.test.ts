// meshlet with the capabilities the Compose example grants, not root's full set: Docker runs the meshlet service as
// root with cap_drop: [ALL] and cap_add from docker-compose.yml, and a step that needs one more capability (arping's
// CAP_NET_RAW, given to /usr/bin/arping as a file capability by libcap2-bin) must fail here, not for a user.
//
//  1. The Compose topology (e2e-topology.ts) with meshlet under `setpriv --bounding-set` = exactly cap_add: every
//     ClusterIP and the LoadBalancer address accept connections (a spawn EPERM from arping once made the address
//     count as failed and never listened on, while /readyz said ready).
//  2. Without NET_ADMIN, a Service address cannot be added to the interface: /readyz is 503 and names the listener
//     and the reason.

import t from 'tap'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { parse } from 'yaml'
import { exec, inNs, must, until } from '../helpers/netns.ts'
import { startMeshlet } from '../helpers/meshlet.ts'
import { capabilityWrap, runComposeTopology, skip as topologySkip } from './e2e-topology.ts'

const COMPOSE_FILE = fileURLToPath(new URL('../../examples/compose/docker-compose.yml', import.meta.url))
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const composeFile: any = parse(readFileSync(COMPOSE_FILE, 'utf8'))
/** cap_add of the meshlet service, as setpriv spells them: NET_ADMIN → net_admin. */
const CAPS: string[] = (composeFile.services.meshlet.cap_add as string[]).map((c) =>
  c.toLowerCase().replace(/^cap_/, ''),
)

const skip = topologySkip ?? ((await exec(['setpriv', '--version'])).code !== 0 ? 'needs setpriv (util-linux)' : null)

// tap's skip (reported as skipped, and refused in CI by .ci/no-skips.sh), never a pass.
if (skip) {
  t.test("Compose topology with the compose file's capabilities", { skip }, () => {})
} else {
  t.same(composeFile.services.meshlet.cap_drop, ['ALL'], 'the compose file drops every other capability')

  t.test(`Compose topology, meshlet with only ${CAPS.join(', ')}`, { timeout: 150000 }, async (t) =>
    runComposeTopology(t, { capabilities: CAPS, light: true }),
  )

  t.test('without net_admin, /readyz is 503 and names the listener and why', { timeout: 60000 }, async (t) => {
    const ns = `capr-${process.pid}`
    await must(['ip', 'netns', 'add', ns])
    t.teardown(() => exec(['ip', 'netns', 'del', ns]))
    await must(['ip', '-n', ns, 'link', 'set', 'lo', 'up'])
    await must(['ip', '-n', ns, 'link', 'add', 'vip0', 'type', 'bridge'])
    await must(['ip', '-n', ns, 'link', 'set', 'vip0', 'up'])
    const caps = CAPS.filter((c) => c !== 'net_admin')
    const m = await startMeshlet(t, {
      wrap: ['ip', 'netns', 'exec', ns, ...capabilityWrap(caps)],
      waitReady: false,
      args: ['--vip-mode', 'interface', '--vip-interface', 'vip0', '--service-cidr', '10.77.0.0/24', '--https', 'off'],
      // A Service with a ready endpoint, so its ClusterIP listener is wanted.
      manifests: {
        'web.yaml': `apiVersion: v1
kind: Service
metadata: { name: web, namespace: default }
spec:
  clusterIP: 10.77.0.10
  ports: [{ name: http, port: 80, targetPort: 8080 }]
---
apiVersion: v1
kind: Endpoints
metadata: { name: web, namespace: default }
subsets:
  - addresses: [{ ip: 127.0.0.1 }]
    ports: [{ name: http, port: 8080 }]
`,
      },
    })
    const readyz = async () => {
      const r = await inNs(ns, ['curl', '-s', '-w', '\n%{http_code}', `http://127.0.0.1:${m.admin!.port}/readyz`])
      return r.stdout
    }
    const body = await until('/readyz 503 naming the listener', async () => {
      const b = await readyz()
      return /\n503$/.test(b) && /^lb: listener/m.test(b) ? b : null
    })
    t.comment(body.split('\n').slice(0, 2).join(' | '))
    t.match(body, /^not ready: lb$/m)
    t.match(
      body,
      /^lb: listener TCP 10\.77\.0\.10:80 \(default\/web\): ip address add 10\.77\.0\.10\/32 dev vip0 failed: .*not permitted/im,
    )
    const st = await (async () =>
      JSON.parse((await inNs(ns, ['curl', '-s', `http://127.0.0.1:${m.admin!.port}/status`])).stdout))()
    t.equal(st.planes.lb.ready, false, '/status: lb not ready')
    t.equal(st.meshlet.ready, false, '/status: meshlet not ready')
    await m.stop()
  })
}
