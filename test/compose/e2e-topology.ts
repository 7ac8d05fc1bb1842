// The Docker Compose example (examples/compose/) as a real topology on one machine, without Docker: network
// namespaces on one bridge, the Compose network's own addresses (198.18.0.0/24; the bridge lives in a namespace of its
// own, so nothing of it is routed on the host and parallel tests cannot clash), the example's manifests unchanged.
//
//   lan-PID (bridge br0, 198.18.0.1 = the gateway)
//     ├─ mesh-PID  198.18.0.2   meshlet up --vip-mode interface --vip-interface eth0 --service-cidr 198.18.0.128/26
//     │                          + the fake Docker DNS on 127.0.0.11:53 (answers "web" and "api" with the replicas)
//     ├─ web1..3   198.18.0.66-68  "web" replicas (fixture-backend.ts: whoami-like, /health settable)
//     ├─ api1      198.18.0.69     "api"
//     └─ cli1, cli2 198.18.0.100-101  clients; /etc/netns/cli*-PID/resolv.conf names meshlet with the cluster search
//                                  list and ndots:5, as the Compose client's does
//
// Everything is checked through real clients inside the client namespaces: getent and curl (glibc resolving through
// the search path), dig, autocannon. Root only. Timings are printed as "# timing ..." lines.
//
// Run by e2e.test.ts (meshlet with root's full capability set) and e2e-capabilities.test.ts (with exactly the
// capabilities docker-compose.yml grants, so a missing one fails a test rather than a user).

import { bridgeTopology, cleanupList, inNs, until } from '../helpers/netns.ts'
import type { Test } from 'tap'
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { startMeshlet, type MeshletProcess } from '../helpers/meshlet.ts'

const MANIFESTS = fileURLToPath(new URL('../../examples/compose/manifests', import.meta.url))
const BACKEND = fileURLToPath(new URL('./fixture-backend.ts', import.meta.url))
const FAKE_DNS = fileURLToPath(new URL('./fixture-docker-dns.ts', import.meta.url))
const LOAD = fileURLToPath(new URL('./fixture-load.ts', import.meta.url))
const NODE = process.execPath

function which(cmd: string): boolean {
  return ['/usr/bin', '/usr/sbin', '/bin', '/sbin', '/usr/local/bin'].some((d) => existsSync(`${d}/${cmd}`))
}

export const skip =
  process.getuid?.() !== 0
    ? 'needs root (network namespaces); CI runs it as root'
    : !['ip', 'curl', 'dig', 'getent'].every(which)
      ? 'needs ip, curl, dig and getent'
      : !existsSync(fileURLToPath(new URL('../../lb/index.ts', import.meta.url)))
        ? 'lb/ (the L4 balancer, which serves ClusterIPs) has not landed yet'
        : null

const PID = process.pid
const NS = {
  lan: `lan-${PID}`,
  mesh: `mesh-${PID}`,
  web1: `web1-${PID}`,
  web2: `web2-${PID}`,
  web3: `web3-${PID}`,
  api1: `api1-${PID}`,
  cli1: `cli1-${PID}`,
  cli2: `cli2-${PID}`,
} as const
const ADDR: Record<Exclude<keyof typeof NS, 'lan'>, string> = {
  mesh: '198.18.0.2',
  web1: '198.18.0.66',
  web2: '198.18.0.67',
  web3: '198.18.0.68',
  api1: '198.18.0.69',
  cli1: '198.18.0.100',
  cli2: '198.18.0.101',
}
const MESHLET = ADDR.mesh
/** dig does not apply the search list: the FQDN. */
const HEADLESS = 'web-headless.default.svc.cluster.local'

export interface TopologyOptions {
  /**
   * Run meshlet with exactly these capabilities (lower case, no CAP_ prefix) as its bounding set, as Docker's
   * cap_drop: [ALL] + cap_add does for root in a container; null: root's full set.
   */
  readonly capabilities: readonly string[] | null
  /** Leave out the kill-under-load step (the longest; the other variant runs it). */
  readonly light: boolean
}

/** setpriv's view of a capability set: the bounding set, nothing inheritable (Docker gives no ambient ones). */
export function capabilityWrap(caps: readonly string[] | null): string[] {
  if (caps === null) return []
  return ['setpriv', '--bounding-set', ['-all', ...caps.map((c) => `+${c}`)].join(','), '--inh-caps', '-all', '--']
}

export async function runComposeTopology(t: Test, opts: TopologyOptions) {
  // ------------------------------------------------------------------ topology
  const cleanup = cleanupList(t)
  await bridgeTopology(cleanup, {
    tag: `t${PID % 10000000}`,
    lan: NS.lan,
    bridgeAddress: '198.18.0.1/24',
    namespaces: Object.values(NS),
    hosts: Object.entries(ADDR).map(([key, ip]) => [NS[key as keyof typeof ADDR], [ip]] as const),
  })
  // The clients' resolv.conf: what `dns:`, `dns_search:` and `dns_opt:` give the Compose client.
  for (const ns of [NS.cli1, NS.cli2]) {
    mkdirSync(`/etc/netns/${ns}`, { recursive: true })
    writeFileSync(
      `/etc/netns/${ns}/resolv.conf`,
      `nameserver ${MESHLET}\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 timeout:2 attempts:2\n`,
    )
    cleanup.push(() => rmSync(`/etc/netns/${ns}`, { recursive: true, force: true }))
  }
  // meshlet's own namespace sees the fake Docker DNS, as a container sees 127.0.0.11.
  mkdirSync(`/etc/netns/${NS.mesh}`, { recursive: true })
  writeFileSync(`/etc/netns/${NS.mesh}/resolv.conf`, 'nameserver 127.0.0.11\n')
  cleanup.push(() => rmSync(`/etc/netns/${NS.mesh}`, { recursive: true, force: true }))

  // ------------------------------------------------------------------ processes
  const procs: ChildProcess[] = []
  cleanup.push(() => {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL')
  })
  const startProc = async (ns: string, args: string[], ready: RegExp): Promise<ChildProcess & { lines: string[] }> => {
    const p = spawn('ip', ['netns', 'exec', ns, NODE, ...args], { stdio: ['pipe', 'pipe', 'pipe'] }) as ChildProcess & {
      lines: string[]
    }
    procs.push(p)
    p.lines = []
    let buf = ''
    let err = ''
    p.stderr!.on('data', (c: Buffer) => (err += c.toString()))
    p.stdout!.setEncoding('utf8').on('data', (c: string) => {
      buf += c
      let k
      while ((k = buf.indexOf('\n')) >= 0) {
        p.lines.push(buf.slice(0, k))
        buf = buf.slice(k + 1)
      }
    })
    await until(
      `${args[0]} in ${ns} ready (${err})`,
      async () => p.lines.some((l) => ready.test(l)) || (p.exitCode !== null ? Promise.reject(new Error(err)) : false),
      15000,
    )
    return p
  }
  const backends: Record<string, ChildProcess> = {}
  for (const name of ['web1', 'web2', 'web3', 'api1'] as const)
    backends[name] = await startProc(NS[name], [BACKEND, name, '80'], /^listening/)

  const dockerDns = await startProc(NS.mesh, [FAKE_DNS, '127.0.0.11', '53'], /^listening/)
  const dnsCommand = async (line: string) => {
    const before = dockerDns.lines.length
    dockerDns.stdin!.write(line + '\n')
    await until(`fake DNS ack for ${line}`, async () => dockerDns.lines.slice(before).includes('ok'), 5000)
  }
  await dnsCommand(`set web ${ADDR.web1},${ADDR.web2},${ADDR.web3}`)
  await dnsCommand(`set api ${ADDR.api1}`)

  const started = Date.now()
  const m: MeshletProcess = await startMeshlet(t, {
    wrap: ['ip', 'netns', 'exec', NS.mesh, ...capabilityWrap(opts.capabilities)],
    files: [MANIFESTS],
    waitReady: false,
    args: [
      '--node',
      'compose',
      '--vip-mode',
      'interface',
      '--vip-interface',
      'eth0',
      '--service-cidr',
      '198.18.0.128/26',
      '--dns',
      `${MESHLET}:53`,
      '--http',
      `${MESHLET}:80`,
      '--https',
      'off',
      '--admin',
      '127.0.0.1:9901',
      '--upstream',
      '127.0.0.11:53',
      '--discovery-resolver',
      '127.0.0.11:53',
      '--access-log',
      'off',
    ],
  })
  // The admin API listens inside meshlet's namespace: ask it from there.
  const admin = async (path: string): Promise<{ status: number; body: string }> => {
    const r = await inNs(NS.mesh, ['curl', '-s', '-o', '-', '-w', '\n%{http_code}', `http://127.0.0.1:9901${path}`])
    const k = r.stdout.lastIndexOf('\n')
    return { status: Number(r.stdout.slice(k + 1)), body: r.stdout.slice(0, k) }
  }
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const status = async (): Promise<any> => JSON.parse((await admin('/status')).body)
  await until('meshlet /readyz', async () => (await admin('/readyz')).status === 200, 20000)
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const service = (s: any, name: string) => s?.snapshot?.services?.find((x: any) => x.key === `default/${name}`)
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const readyIps = (s: any, name: string): string[] => {
    const endpoints: { ready: boolean; ip: string }[] = service(s, name)?.ports?.[0]?.endpoints ?? []
    return [...new Set<string>(endpoints.filter((e) => e.ready).map((e) => e.ip))].sort()
  }
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  let last: any = null
  await until(
    '3 ready web replicas, 1 api',
    async () => {
      const s = (last = await status())
      return readyIps(s, 'web').length === 3 && readyIps(s, 'api').length === 1
    },
    20000,
  ).catch((err: Error) => {
    const web = service(last, 'web')
    if (last?.config?.discovery === undefined)
      throw new Error(
        `${err.message}: no "discovery" in /status config: is config/dns-discovery.ts wired into bin/meshlet.ts?`,
      )
    throw new Error(
      `${err.message}; web: ${JSON.stringify(web?.ports ?? null)}; discovery: ${JSON.stringify(last?.config?.discovery ?? null)}; errors: ${JSON.stringify(last?.snapshot?.errors ?? null)}`,
    )
  })
  const timeToReady = Date.now() - started
  t.comment(`timing start → 3 web replicas discovered and ready: ${timeToReady} ms`)

  const st = await status()
  const webVip: string = service(st, 'web').clusterIPs[0]
  const apiVip: string = service(st, 'api').clusterIPs[0]
  t.match(webVip, /^198\.18\.0\.(1[2-8]\d|19[01])$/, 'web ClusterIP from the service CIDR')

  const curl = (ns: string, url: string, extra: string[] = []) =>
    inNs(ns, ['curl', '-s', '--max-time', '3', ...extra, url], 8000)
  const hostOf = (body: string) => /Hostname: (\S+)/.exec(body)?.[1] ?? null
  const dig = async (ns: string, name: string) =>
    (await inNs(ns, ['dig', '+short', '+time=2', '+tries=1', `@${MESHLET}`, name])).stdout
      .split('\n')
      .filter(Boolean)
      .sort()

  // ------------------------------------------------------------------ names through the search path
  await t.test('short names and FQDNs resolve through the search path and connect through ClusterIPs', async (t) => {
    const t0 = Date.now()
    const short = await inNs(NS.cli1, ['getent', 'hosts', 'web'])
    t.comment(`timing getent hosts web (search path, ndots:5): ${Date.now() - t0} ms`)
    t.equal(short.stdout.split(/\s+/)[0], webVip, 'web → its ClusterIP')
    const fqdn = await inNs(NS.cli1, ['getent', 'hosts', 'web.default.svc.cluster.local'])
    t.equal(fqdn.stdout.split(/\s+/)[0], webVip)
    const api = await inNs(NS.cli2, ['getent', 'hosts', 'api'])
    t.equal(api.stdout.split(/\s+/)[0], apiVip)
    const r = await curl(NS.cli1, 'http://web/')
    t.match(hostOf(r.stdout), /^web[123]$/, 'http://web/ reaches a web replica')
    const r2 = await curl(NS.cli2, 'http://web.default.svc.cluster.local/')
    t.match(hostOf(r2.stdout), /^web[123]$/)
    const r3 = await curl(NS.cli1, 'http://api:8080/')
    t.equal(hostOf(r3.stdout), 'api1', 'http://api:8080/ (port 8080 → targetPort http)')
    const seen = new Set<string>()
    for (let k = 0; k < 15; k++) seen.add(hostOf((await curl(NS.cli1, `http://${webVip}/`)).stdout) ?? 'error')
    t.ok(seen.size >= 2 && !seen.has('error'), `balanced over replicas: ${[...seen].join(' ')}`)
  })

  await t.test('a headless Service returns its ready replicas', async (t) => {
    t.same(await dig(NS.cli1, 'web-headless.default.svc.cluster.local'), [ADDR.web1, ADDR.web2, ADDR.web3])
  })

  await t.test('ClientIP affinity: each client sticks to one replica', async (t) => {
    for (const ns of [NS.cli1, NS.cli2]) {
      const got = new Set<string>()
      for (let k = 0; k < 8; k++) got.add(hostOf((await curl(ns, 'http://web-sticky/')).stdout) ?? 'error')
      t.equal(got.size, 1, `${ns}: one replica (${[...got].join(' ')})`)
      t.notOk(got.has('error'))
    }
  })

  await t.test("the Ingress on meshlet's address routes by host and path", async (t) => {
    const h = ['-H', 'Host: web.example.test']
    t.match(hostOf((await curl(NS.cli1, `http://${MESHLET}/`, h)).stdout), /^web[123]$/, '/ → web')
    t.equal(hostOf((await curl(NS.cli1, `http://${MESHLET}/api/v1`, h)).stdout), 'api1', '/api → api')
    const other = await curl(NS.cli1, `http://${MESHLET}/`, [
      '-H',
      'Host: other.test',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code}',
    ])
    t.equal(other.stdout, '404', 'unknown host → 404')
  })

  await t.test('the LoadBalancer Service gets a pool address reachable from the clients', async (t) => {
    const s = await status()
    const lbIp = service(s, 'web-public')?.loadBalancerIPs?.[0]
    t.match(lbIp, /^198\.18\.0\.24\d|198\.18\.0\.25[0-5]$/, 'from 198.18.0.240/28')
    t.match(hostOf((await curl(NS.cli2, `http://${lbIp}/`)).stdout), /^web[123]$/)
  })

  await t.test(
    'a replica whose readiness fails disappears everywhere within the probe bound, then returns',
    async (t) => {
      await curl(NS.cli1, `http://${ADDR.web2}/health`, ['-X', 'POST', '-d', '500'])
      const t0 = Date.now()
      await until(
        'web2 out of the headless answer',
        async () => (await dig(NS.cli1, HEADLESS)).join() === [ADDR.web1, ADDR.web3].join(),
      )
      const gone = Date.now() - t0
      t.comment(`timing readiness failure → out of DNS: ${gone} ms (periodSeconds 1, failureThreshold 2)`)
      t.ok(gone < 6000, `within the probe bound (${gone} ms)`)
      t.notOk(readyIps(await status(), 'web').includes(ADDR.web2), 'not a ready endpoint')
      for (let k = 0; k < 10; k++)
        t.not(hostOf((await curl(NS.cli1, 'http://web/')).stdout), 'web2', 'ClusterIP never picks it')
      const viaIngress = await curl(NS.cli2, `http://${MESHLET}/`, ['-H', 'Host: web.example.test'])
      t.not(hostOf(viaIngress.stdout), 'web2')
      await curl(NS.cli1, `http://${ADDR.web2}/health`, ['-X', 'POST', '-d', '200'])
      const t1 = Date.now()
      await until(
        'web2 back in the headless answer',
        async () => (await dig(NS.cli1, HEADLESS)).join() === [ADDR.web1, ADDR.web2, ADDR.web3].join(),
      )
      t.comment(`timing readiness recovery → back in DNS: ${Date.now() - t1} ms`)
    },
  )

  await t.test('scaling the fake Docker DNS from 3 to 2 replicas updates every plane', async (t) => {
    // What `docker compose up --scale web=2` does: one container stops, and Docker's DNS stops answering it.
    backends.web3!.kill('SIGTERM')
    await dnsCommand(`set web ${ADDR.web1},${ADDR.web2}`)
    const t0 = Date.now()
    await until(
      '2 replicas in /status',
      async () =>
        readyIps(await status(), 'web').join() === [ADDR.web1, ADDR.web2].join() &&
        service(await status(), 'web').ports[0].endpoints.length === 2,
    )
    const inStatus = Date.now() - t0
    t.same(await dig(NS.cli1, HEADLESS), [ADDR.web1, ADDR.web2], 'headless DNS')
    t.comment(
      `timing scale 3 → 2 seen in every plane: ${Date.now() - t0} ms (status after ${inStatus} ms; resolve interval 2 s)`,
    )
    const s = await status()
    t.notOk(
      s.snapshot.pods.some((p: { key: string }) => p.key.includes('198-18-0-68')),
      'the Pod of the gone replica is gone',
    )
    for (let k = 0; k < 8; k++) t.match(hostOf((await curl(NS.cli2, 'http://web/')).stdout), /^web[12]$/)
    t.match(hostOf((await curl(NS.cli2, `http://${MESHLET}/`, ['-H', 'Host: web.example.test'])).stdout), /^web[12]$/)
  })

  if (opts.capabilities !== null)
    await t.test('meshlet runs with exactly the given capabilities', async (t) => {
      const bounding = /^CapBnd:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${m.proc.pid}/status`, 'utf8'))?.[1]
      const want = opts.capabilities!.reduce((mask, c) => mask | (1n << BigInt(CAPABILITY_BITS[c] ?? 63)), 0n)
      t.equal(BigInt(`0x${bounding}`), want, `bounding set ${bounding} = ${opts.capabilities!.join(', ')}`)
    })

  if (!opts.light)
    await t.test('killing one backend under load costs no idempotent request once it has been ejected', async (t) => {
      const load = (url: string, host?: string) =>
        new Promise<{ ok: number; failures: number[] }>((resolve, reject) => {
          const args = ['netns', 'exec', NS.cli1, NODE, LOAD, url, '6', '4', ...(host ? [host] : [])]
          execFile('ip', args, { timeout: 20000, encoding: 'utf8' }, (err, stdout, stderr) => {
            if (err) reject(new Error(`load: ${err.message} ${stderr}`))
            else resolve(JSON.parse(stdout.trim().split('\n').pop()!))
          })
        })
      const l4 = load(`http://${webVip}/`)
      const l7 = load(`http://${MESHLET}/`, 'web.example.test')
      await sleep(1500)
      const killedAt = Date.now()
      backends.web2!.kill('SIGKILL')
      const ejectedAt = await until(
        'web2 ejected',
        async () => (!readyIps(await status(), 'web').includes(ADDR.web2) ? Date.now() : null),
        10000,
      )
      const [r4, r7] = await Promise.all([l4, l7])
      t.comment(`timing kill → ejected: ${ejectedAt - killedAt} ms`)
      for (const [name, r] of [
        ['L4 ClusterIP', r4],
        ['L7 Ingress', r7],
      ] as const) {
        const before = r.failures.filter((x) => x < ejectedAt).length
        const after = r.failures.filter((x) => x >= ejectedAt).length
        t.comment(`load ${name}: ${r.ok} ok, ${before} failed before ejection, ${after} after`)
        t.ok(r.ok > 100, `${name}: the load ran (${r.ok} ok)`)
        t.equal(after, 0, `${name}: no request lost once ejected`)
      }
    })

  await m.stop()
}

/** linux/capability.h numbers of the capabilities a meshlet container may be given. */
const CAPABILITY_BITS: Readonly<Record<string, number>> = {
  chown: 0,
  dac_override: 1,
  kill: 5,
  setgid: 6,
  setuid: 7,
  net_bind_service: 10,
  net_broadcast: 11,
  net_admin: 12,
  net_raw: 13,
  sys_admin: 21,
}
