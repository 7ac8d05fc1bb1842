// Who may recurse (issue 13 item 9): a real `meshlet up` in a network namespace, listening on 0.0.0.0 as by default,
// with dnsmasq on the namespace's loopback as its upstream. A client on the node's own network (the bridge subnet,
// as a container on a Compose network) gets names outside the zone forwarded; the same client host sending from a
// routed subnet the node has no address in gets REFUSED for them (UDP and TCP, main thread and workers), in-zone
// names still, and an ExternalName only its CNAME; --allow-recursion opens that subnet. Root only.
//
//   lan-PID (bridge br0, 198.18.40.254)
//     ├─ srv-PID  eth0 198.18.40.1/24; route to 198.18.41.0/24 via the client. meshlet on 0.0.0.0, dnsmasq 127.0.0.1
//     └─ cli-PID  eth0 198.18.40.2/24 (on the node's network) and 198.18.41.2/24 (outside it)

import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { bridgeTopology, cleanupList, inNs, must, until } from '../helpers/netns.ts'
import { startMeshlet } from '../helpers/meshlet.ts'
import { FIXTURE } from './helpers.ts'

const Z = 'cluster.local'

function which(cmd: string): boolean {
  return ['/usr/bin', '/usr/sbin', '/bin', '/sbin'].some((d) => existsSync(`${d}/${cmd}`))
}

const skip =
  process.getuid?.() !== 0
    ? 'needs root (network namespaces); CI runs it as root'
    : !['ip', 'dig', 'dnsmasq'].every(which)
      ? 'needs ip, dig and dnsmasq'
      : false

const PID = process.pid
const NS = { lan: `rlan-${PID}`, srv: `rsrv-${PID}`, cli: `rcli-${PID}` } as const
const SERVER = '198.18.40.1'
const INSIDE = '198.18.40.2'
const OUTSIDE = '198.18.41.2'
const UPSTREAM_PORT = 5353

interface Answer {
  readonly status: string
  readonly answer: readonly string[]
}

/** dig from the client namespace, sending from `from`. */
async function dig(port: number, from: string, name: string, type = 'A', tcp = false): Promise<Answer> {
  const r = await inNs(NS.cli, [
    'dig',
    `@${SERVER}`,
    '-p',
    String(port),
    '-b',
    from,
    name,
    type,
    '+time=3',
    '+tries=1',
    '+nocookie',
    '+noall',
    '+comments',
    '+answer',
    ...(tcp ? ['+tcp'] : []),
  ])
  const status = /status: (\w+)/.exec(r.stdout)?.[1] ?? `no answer (${r.code})`
  const answer = r.stdout
    .split('\n')
    .filter((l) => l && !l.startsWith(';'))
    .map((l) => l.split(/\s+/).slice(4).join(' '))
  return { status, answer }
}

async function setUp(t: Test): Promise<void> {
  const cleanup = cleanupList(t)
  await bridgeTopology(cleanup, {
    tag: `r${PID % 10000000}`,
    lan: NS.lan,
    bridgeAddress: '198.18.40.254/24',
    namespaces: [NS.lan, NS.srv, NS.cli],
    hosts: [
      [NS.srv, [SERVER]],
      [NS.cli, [INSIDE, OUTSIDE]],
    ],
  })
  await must(['ip', '-n', NS.srv, 'route', 'add', '198.18.41.0/24', 'via', INSIDE])
  // The upstream: dnsmasq on the server namespace's loopback, answering every *.example.org with 192.0.2.1.
  const dnsmasq = spawn(
    'ip',
    [
      'netns',
      'exec',
      NS.srv,
      'dnsmasq',
      '--keep-in-foreground',
      '--conf-file=/dev/null',
      '--no-resolv',
      '--no-hosts',
      '--bind-interfaces',
      '--listen-address=127.0.0.1',
      `--port=${UPSTREAM_PORT}`,
      '--address=/example.org/192.0.2.1',
      '--pid-file=',
    ],
    { stdio: 'ignore' },
  )
  cleanup.push(() => dnsmasq.kill())
  await until('dnsmasq answering', async () => {
    const r = await inNs(NS.srv, ['dig', '@127.0.0.1', '-p', String(UPSTREAM_PORT), 'x.example.org', '+short'])
    return r.stdout.includes('192.0.2.1')
  })
}

async function meshlet(t: Test, args: string[]): Promise<number> {
  const m = await startMeshlet(t, {
    wrap: ['ip', 'netns', 'exec', NS.srv],
    manifests: { 'cluster.yaml': FIXTURE },
    waitReady: false,
    args: [
      '--dns',
      '0.0.0.0:0',
      '--admin',
      'off',
      '--http',
      'off',
      '--https',
      'off',
      '--vip-mode',
      'none',
      '--upstream',
      `127.0.0.1:${UPSTREAM_PORT}`,
      ...args,
    ],
  })
  const port = m.dns!.port
  await until('zone loaded', async () => (await dig(port, INSIDE, `web.default.svc.${Z}`)).status === 'NOERROR')
  return port
}

t.test('recursion only for loopback, the node’s networks and --allow-recursion', { skip }, async (t) => {
  await setUp(t)

  t.test('default: the node’s own network recurses, a routed outsider is refused', async (t) => {
    const port = await meshlet(t, [])
    for (const tcp of [false, true]) {
      const via = tcp ? 'TCP' : 'UDP'
      const inside = await dig(port, INSIDE, 'www.example.org', 'A', tcp)
      t.same(inside, { status: 'NOERROR', answer: ['192.0.2.1'] }, `${via}: node network client gets the answer`)
      const outside = await dig(port, OUTSIDE, 'www.example.org', 'A', tcp)
      t.same(outside, { status: 'REFUSED', answer: [] }, `${via}: outsider refused for a forwarded name`)
      const local = await dig(port, OUTSIDE, `web.default.svc.${Z}`, 'A', tcp)
      t.equal(local.status, 'NOERROR', `${via}: outsider still gets in-zone names`)
    }
    // ExternalName: the CNAME, not chased outside the zone for an outsider.
    const ext = await dig(port, OUTSIDE, `ext.default.svc.${Z}`)
    t.same(ext, { status: 'NOERROR', answer: ['api.example.org.'] }, 'outsider gets the CNAME only')
    const extIn = await dig(port, INSIDE, `ext.default.svc.${Z}`)
    t.same(extIn.answer, ['api.example.org.', '192.0.2.1'], 'node network client gets the chased target')
  })

  t.test('--allow-recursion opens a subnet', async (t) => {
    const port = await meshlet(t, ['--allow-recursion', '198.18.41.0/24'])
    const outside = await dig(port, OUTSIDE, 'www.example.org')
    t.same(outside, { status: 'NOERROR', answer: ['192.0.2.1'] }, 'the allowed subnet recurses')
  })

  t.test('workers apply the same rule', async (t) => {
    const port = await meshlet(t, ['--dns-workers', '2'])
    for (const tcp of [false, true]) {
      const via = tcp ? 'TCP' : 'UDP'
      t.equal((await dig(port, OUTSIDE, 'www.example.org', 'A', tcp)).status, 'REFUSED', `${via}: outsider refused`)
      t.same((await dig(port, INSIDE, 'www.example.org', 'A', tcp)).answer, ['192.0.2.1'], `${via}: inside answered`)
    }
    t.same((await dig(port, OUTSIDE, `ext.default.svc.${Z}`)).answer, ['api.example.org.'], 'CNAME only')
  })
})
