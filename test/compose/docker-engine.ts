// The Compose example on a real Docker engine (`npm run test:docker`; .ci/run calls it after `npm test`). Root only.
//
// It starts its own dockerd (data root, exec root, pid file and socket under /var/tmp/meshlet-docker, so images stay
// cached between runs), builds the images the Dockerfile and docker-compose.yml name without a registry
// (images/build.sh), builds meshlet's image from the project's Dockerfile and runs examples/compose/ unchanged with
// `docker compose` (v2) when the engine's CLI has it, else `docker-compose` (v1.29). Then it walks the README's
// "Docker Compose" section from the client container and times each step ("# timing ..." lines). The example runs the
// userspace L4 plane; one extra container runs the same Services on the nftables plane. At the end: every container
// and network it made is removed, dockerd stopped, and the host's iptables rules and ip_forward restored.
//
// Not part of `npm test` (tap only includes *.test.ts): it takes minutes and changes host networking while it runs.

import t, { type Test } from 'tap'
import { execFile, spawn } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { rootCertificates } from 'node:tls'
import { request } from 'node:http'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const EXAMPLE = join(ROOT, 'examples/compose')
const BUILD_IMAGES = join(ROOT, 'test/compose/images/build.sh')
const CACHE = process.env.MESHLET_DOCKER_CACHE ?? '/var/tmp/meshlet-docker'
const SOCKET = join(CACHE, 'docker.sock')
const PIDFILE = join(CACHE, 'dockerd.pid')
/** The docker CLI; DOCKER=/usr/bin/docker picks docker.io's where another comes first in PATH. */
const DOCKER = process.env.DOCKER ?? 'docker'
const MESHLET_IP = '198.18.0.2'
/** The reduced-capability variant's address: inside the subnet, outside ip_range, not meshlet's. */
const VARIANT_IP = '198.18.0.3'
const VARIANT_NAME = `meshlet-demo-no-net-admin-${process.pid}`
/**
 * The nftables variant (the example itself runs the userspace L4 plane): another address outside ip_range, and its
 * own --service-cidr beside the example's 198.18.0.128/26, so its ClusterIPs never clash with the example's.
 */
const NFT_IP = '198.18.0.4'
const NFT_CIDR = '198.18.0.192/28'
const NFT_NAME = `meshlet-demo-nftables-${process.pid}`

const ENV: NodeJS.ProcessEnv = {
  ...process.env,
  DOCKER_HOST: `unix://${SOCKET}`,
  DOCKER,
  // The README's commands say `docker`: the same CLI as DOCKER.
  PATH: DOCKER.includes('/') ? `${dirname(DOCKER)}:${process.env.PATH ?? ''}` : process.env.PATH,
}

interface Result {
  code: number | null
  stdout: string
  stderr: string
}

function run(argv: readonly string[], timeoutMs = 60_000, cwd = EXAMPLE): Promise<Result> {
  return new Promise((resolve) => {
    execFile(
      argv[0]!,
      argv.slice(1),
      { timeout: timeoutMs, encoding: 'utf8', env: ENV, cwd, maxBuffer: 64 << 20 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0
        resolve({ code, stdout, stderr })
      },
    )
  })
}

async function must(argv: readonly string[], timeoutMs = 60_000): Promise<string> {
  const r = await run(argv, timeoutMs)
  if (r.code !== 0) throw new Error(`${argv.join(' ')} failed (${r.code}): ${r.stderr.slice(-2000)}`)
  return r.stdout
}

async function until<T>(what: string, fn: () => Promise<T | null | false>, timeoutMs: number): Promise<T> {
  const end = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      const v = await fn()
      if (v) return v
      last = v
    } catch (err) {
      last = err
    }
    if (Date.now() > end) throw new Error(`not seen in ${timeoutMs} ms: ${what} (last: ${String(last)})`)
    await sleep(100)
  }
}

function onPath(cmd: string): boolean {
  return (process.env.PATH ?? '').split(':').some((d) => existsSync(join(d, cmd)))
}

const skip =
  process.getuid?.() !== 0
    ? 'needs root (dockerd)'
    : !['dockerd', 'docker', 'debootstrap', 'iptables'].every(onPath)
      ? 'needs dockerd, docker, debootstrap and iptables (Debian: docker.io debootstrap iptables)'
      : null

// ------------------------------------------------------------------------------------------------------ dockerd

/** What dockerd changes on the host and never puts back: iptables rules (filter and nat), ip_forward, bridges. */
interface HostNetState {
  /** Network interfaces before dockerd: docker0 and the bridges of Compose networks it leaves are removed. */
  links: Set<string>
  ipForward: string
  forwardPolicy: string
}

async function startDockerd(cleanup: (() => Promise<unknown>)[]): Promise<void> {
  mkdirSync(join(CACHE, 'data'), { recursive: true })
  await stopDockerd() // one left by a killed run of this test
  const before: HostNetState = {
    links: await linkNames(),
    ipForward: readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim(),
    forwardPolicy: /^:FORWARD (\w+)/m.exec((await run(['iptables-save', '-t', 'filter'])).stdout)?.[1] ?? 'ACCEPT',
  }
  cleanup.push(() => restoreHostNet(before))
  const log = join(CACHE, 'dockerd.log')
  writeFileSync(log, '')
  const child = spawn(
    'sh',
    [
      '-c',
      `exec dockerd --data-root "$1/data" --exec-root "$1/exec" --pidfile "$1/dockerd.pid" -H "unix://$1/docker.sock" >>"$1/dockerd.log" 2>&1`,
      'dockerd',
      CACHE,
    ],
    { detached: true, stdio: 'ignore' },
  )
  child.unref()
  cleanup.push(async () => {
    await stopDockerd()
    await unmountExecRoot()
  })
  await until(
    'dockerd answers',
    async () => (await run([DOCKER, 'info', '--format', '{{.ServerVersion}}'], 5000)).code === 0,
    60_000,
  ).catch((err: Error) => {
    throw new Error(`${err.message}\n${readFileSync(log, 'utf8').slice(-3000)}`)
  })
}

async function stopDockerd(): Promise<void> {
  if (!existsSync(PIDFILE)) return
  const pid = Number(readFileSync(PIDFILE, 'utf8').trim())
  if (!(pid > 0)) return
  try {
    process.kill(pid, 'SIGTERM')
  } catch {
    return
  }
  const end = Date.now() + 30_000
  while (Date.now() < end) {
    try {
      process.kill(pid, 0)
    } catch {
      return
    }
    await sleep(100)
  }
  process.kill(pid, 'SIGKILL')
}

/** dockerd leaves mounts under its exec root (the bind-mounted handle of the host's netns): unmount them. */
async function unmountExecRoot(): Promise<void> {
  const root = join(CACHE, 'exec') + '/'
  const mounts = readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[1] ?? '')
    .filter((m) => m.startsWith(root))
  for (const m of mounts.reverse()) await run(['umount', '-l', m])
}

/**
 * Removes what dockerd added to iptables (its chains and the rules naming them or its bridges), nothing else, and the
 * bridges it left; puts ip_forward and the FORWARD policy back.
 */
async function restoreHostNet(before: HostNetState): Promise<void> {
  for (const table of ['filter', 'nat']) {
    const saved = (await run(['iptables-save', '-t', table])).stdout
    if (!/DOCKER/.test(saved)) continue
    const kept = saved
      .split('\n')
      .filter((l) => !/DOCKER|docker0|br-[0-9a-f]{12}/.test(l))
      .map((l) =>
        table === 'filter' && l.startsWith(':FORWARD ')
          ? l.replace(/^:FORWARD \w+/, `:FORWARD ${before.forwardPolicy}`)
          : l,
      )
      .join('\n')
    await new Promise<void>((resolve) => {
      const p = spawn('iptables-restore', ['-T', table], { stdio: ['pipe', 'ignore', 'ignore'] })
      p.on('close', () => resolve())
      p.on('error', () => resolve())
      p.stdin.end(kept)
    })
  }
  writeFileSync('/proc/sys/net/ipv4/ip_forward', before.ipForward + '\n')
  for (const link of await linkNames())
    if (!before.links.has(link) && /^(docker0|br-[0-9a-f]{12})$/.test(link)) await run(['ip', 'link', 'del', link])
}

async function linkNames(): Promise<Set<string>> {
  const out = (await run(['ip', '-o', 'link', 'show'])).stdout
  return new Set([...out.matchAll(/^\d+: ([^:@]+)[:@]/gm)].map((m) => m[1]!))
}

// ------------------------------------------------------------------------------------------------------ compose

/** `docker compose` when the CLI has the v2 plugin, else `docker-compose` (1.29); MESHLET_COMPOSE overrides. */
async function composeCommand(): Promise<string[]> {
  if (process.env.MESHLET_COMPOSE) return process.env.MESHLET_COMPOSE.split(' ')
  if ((await run([DOCKER, 'compose', 'version'], 10_000)).code === 0) return [DOCKER, 'compose']
  return ['docker-compose']
}

/**
 * The certificates of NODE_EXTRA_CA_CERTS that Node does not already trust: the image runs this same Node binary, so
 * these are all npm needs, and they fit in a build argument (a whole system bundle is over the 128 KiB limit).
 */
function npmCa(): string {
  const file = process.env.NODE_EXTRA_CA_CERTS
  if (!file || !existsSync(file)) return ''
  const pems = readFileSync(file, 'utf8').match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []
  const known = new Set(rootCertificates.map((c) => c.replace(/\s/g, '')))
  return pems.filter((p) => !known.has(p.replace(/\s/g, ''))).join('\n')
}

/** The shell commands of the README's "Docker Compose" section, in order, without their comments. */
function readmeCommands(): string[] {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
  const from = readme.indexOf('\n## Docker Compose')
  const section = readme.slice(from, readme.indexOf('\n## ', from + 1))
  return [...section.matchAll(/```sh\n([\s\S]*?)```/g)]
    .flatMap((m) => m[1]!.split('\n'))
    .map((l) => l.replace(/\s+#\s.*$/, '').trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
}

/** The A records nslookup printed for the name (not the server's own "Address: 127.0.0.11#53" line). */
function nslookupAddresses(out: string): string[] {
  return [...out.matchAll(/^Address:\s*(\d+\.\d+\.\d+\.\d+)\s*$/gm)].map((m) => m[1]!).sort()
}

/** Sequential GETs on `concurrency` lanes for `ms`, a new connection each (agent: false): each outcome and when. */
async function httpLoad(url: string, ms: number, concurrency: number): Promise<{ at: number; ok: boolean }[]> {
  const out: { at: number; ok: boolean }[] = []
  const end = Date.now() + ms
  const one = () =>
    new Promise<boolean>((resolve) => {
      const req = request(url, { agent: false, timeout: 2000 }, (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode === 200))
        res.on('error', () => resolve(false))
      })
      req.on('timeout', () => req.destroy())
      req.on('error', () => resolve(false))
      req.end()
    })
  const lane = async () => {
    while (Date.now() < end) {
      const ok = await one()
      out.push({ at: Date.now(), ok })
    }
  }
  await Promise.all(Array.from({ length: concurrency }, lane))
  return out
}

const hostOf = (body: string) => /^Hostname: (\S+)/m.exec(body)?.[1] ?? null

async function walk(t: Test): Promise<void> {
  const began = Date.now()
  const cleanup: (() => Promise<unknown>)[] = []
  t.teardown(async () => {
    for (const fn of cleanup.reverse()) {
      try {
        await fn()
      } catch (err) {
        t.comment(`cleanup: ${(err as Error).message}`)
      }
    }
    t.comment(`timing whole test: ${((Date.now() - began) / 1000).toFixed(1)} s`)
  })
  const timing = (what: string, ms: number) => t.comment(`timing ${what}: ${ms} ms`)

  let t0 = Date.now()
  await startDockerd(cleanup)
  timing('dockerd up', Date.now() - t0)

  t0 = Date.now()
  await must(['bash', BUILD_IMAGES], 900_000)
  timing('base and stand-in images (images/build.sh)', Date.now() - t0)

  const compose = await composeCommand()
  t.comment(`compose: ${compose.join(' ')} (${(await run([...compose, 'version', '--short'])).stdout.trim()})`)
  const c = (args: readonly string[], timeoutMs?: number) => must([...compose, ...args], timeoutMs)
  const client = (cmd: readonly string[], timeoutMs = 20_000) =>
    run([...compose, 'exec', '-T', 'client', ...cmd], timeoutMs)
  const curl = async (url: string, extra: readonly string[] = []) =>
    (await client(['curl', '-s', '--max-time', '3', ...extra, url])).stdout

  // In reverse: the variant container first (it holds the network), then the Compose project.
  cleanup.push(async () => {
    const r = await run([...compose, 'down', '-v', '--remove-orphans', '--timeout', '2'], 120_000)
    if (r.code !== 0) throw new Error(`compose down: ${r.stderr}`)
    const left =
      (await must([DOCKER, 'ps', '-aq'])).trim() +
      (await must([DOCKER, 'network', 'ls', '-q', '-f', 'name=meshlet-demo'])).trim()
    if (left) throw new Error(`left behind after compose down: ${left}`)
  })
  cleanup.push(() => run([DOCKER, 'rm', '-f', VARIANT_NAME, NFT_NAME], 30_000))

  // ---------------------------------------------------------------- the README's walk-through, as written
  t0 = Date.now()
  const ca = npmCa()
  await c(['build', ...(ca ? ['--build-arg', `NPM_CA=${ca}`] : [])], 900_000)
  timing('compose build (meshlet from the Dockerfile)', Date.now() - t0)
  t0 = Date.now()
  await c(['up', '-d'], 180_000) // returns once the client has started, which waits for meshlet to be healthy
  timing('compose up -d → meshlet healthy, client started', Date.now() - t0)

  const webReplicas = async (): Promise<Map<string, string>> => {
    const ids = (await c(['ps', '-q', 'web'])).split('\n').filter(Boolean)
    const out = new Map<string, string>() // ip → hostname
    if (ids.length === 0) return out
    const lines = await must([
      DOCKER,
      'inspect',
      '-f',
      '{{.State.Running}} {{.Config.Hostname}} {{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}',
      ...ids,
    ])
    for (const l of lines.split('\n').filter(Boolean)) {
      const [running, host, ip] = l.split(' ')
      if (running === 'true' && ip) out.set(ip, host!)
    }
    return out
  }
  const containerWithIp = async (service: string, ip: string): Promise<string> => {
    for (const id of (await c(['ps', '-q', service])).split('\n').filter(Boolean)) {
      const a = await must([DOCKER, 'inspect', '-f', '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}', id])
      if (a.trim() === ip) return id
    }
    throw new Error(`no ${service} container has ${ip}`)
  }
  const headless = async () => nslookupAddresses((await client(['nslookup', 'web-headless'])).stdout)
  const sameSet = (a: readonly string[], b: readonly string[]) => a.join() === [...b].sort().join()
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const status = async (): Promise<any> => JSON.parse(await must(['curl', '-s', 'http://127.0.0.1:9901/status']))
  const svc = async (name: string) =>
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    (await status()).snapshot.services.find((s: any) => s.key === `default/${name}`)

  let replicas = await webReplicas()
  t.equal(replicas.size, 3, 'deploy.replicas: 3 web replicas')
  await until('3 replicas discovered', async () => sameSet(await headless(), [...replicas.keys()]), 20_000)

  await t.test('short and full names resolve to the ClusterIP; http://web/ spreads over the replicas', async (t) => {
    const web = await svc('web')
    const vip: string = web.clusterIPs[0]
    t.match(vip, /^198\.18\.0\.(1[2-8]\d|19[01])$/, 'web ClusterIP from --service-cidr 198.18.0.128/26')
    t.same(nslookupAddresses((await client(['nslookup', 'web'])).stdout), [vip], 'web → ClusterIP (search path)')
    t.same(nslookupAddresses((await client(['nslookup', 'web.default.svc.cluster.local'])).stdout), [vip])
    const seen = new Set<string>()
    for (let k = 0; k < 12; k++) seen.add(hostOf(await curl('http://web/')) ?? 'error')
    t.notOk(seen.has('error'), `every request answered (${[...seen].join(' ')})`)
    t.ok(seen.size >= 2, `spread over ${seen.size} replicas`)
    t.ok(
      [...seen].every((h) => [...replicas.values()].includes(h)),
      'only web replicas answer',
    )
    t.match(hostOf(await curl('http://web.default.svc.cluster.local/')), /\S/)
    t.match(await curl('http://api:8080/'), /^Name: api$/m, 'http://api:8080/ → api')
  })

  await t.test('the headless name returns every replica', async (t) => {
    t.same(await headless(), [...replicas.keys()].sort())
  })

  await t.test('the sticky Service keeps one replica', async (t) => {
    const got = new Set<string>()
    for (let k = 0; k < 8; k++) got.add(hostOf(await curl('http://web-sticky/')) ?? 'error')
    t.equal(got.size, 1, [...got].join(' '))
    t.notOk(got.has('error'))
  })

  await t.test('the LoadBalancer address answers', async (t) => {
    const lbIp: string = (await svc('web-public')).loadBalancerIPs[0]
    t.match(lbIp, /^198\.18\.0\.2(4\d|5[0-5])$/, 'from the pool 198.18.0.240/28')
    t.match(hostOf(await curl(`http://${lbIp}/`)), /\S/, `http://${lbIp}/`)
    t.match(hostOf(await curl('http://web-public/')), /\S/, 'http://web-public/')
  })

  await t.test('the Ingress routes by path, from the client and from the host', async (t) => {
    const h = ['-H', 'Host: web.example.test']
    t.ok([...replicas.values()].includes(hostOf(await curl(`http://${MESHLET_IP}/`, h)) ?? ''), '/ → web')
    t.match(await curl(`http://${MESHLET_IP}/api`, h), /^Name: api$/m, '/api → api')
    const fromHost = await must(['curl', '-s', '--max-time', '3', ...h, 'http://127.0.0.1:8080/'])
    t.ok([...replicas.values()].includes(hostOf(fromHost) ?? ''), 'published 127.0.0.1:8080 → web')
  })

  await t.test('an unready replica leaves DNS and the ClusterIP, then comes back', async (t) => {
    const [ip, host] = [...replicas][0]!
    await client(['curl', '-s', '-X', 'POST', '-d', '500', `http://${ip}/health`])
    let t1 = Date.now()
    await until(`${ip} out of DNS`, async () => !(await headless()).includes(ip), 10_000)
    timing('readiness failure → out of DNS', Date.now() - t1)
    for (let k = 0; k < 8; k++) t.not(hostOf(await curl('http://web/')), host, 'the ClusterIP never picks it')
    await client(['curl', '-s', '-X', 'POST', '-d', '200', `http://${ip}/health`])
    t1 = Date.now()
    await until(`${ip} back in DNS`, async () => (await headless()).includes(ip), 10_000)
    timing('readiness recovery → back in DNS', Date.now() - t1)
    t.pass('left and came back')
  })

  await t.test('docker stop of a replica: no request lost 2 s after the stop', async (t) => {
    // The load runs on the host, which sits on the Compose network's bridge (198.18.0.1) and so reaches the ClusterIP
    // as the containers do: a new connection per request, two at a time, for 8 s, each outcome with its time.
    const vip: string = (await svc('web')).clusterIPs[0]
    const load = httpLoad(`http://${vip}/`, 8000, 2)
    await sleep(2500)
    const [ip] = [...replicas][1]!
    const victim = await containerWithIp('web', ip)
    const readyWeb = async () => {
      const ports = (await svc('web')).ports[0].endpoints as { ip: string; ready: boolean }[]
      return ports.filter((e) => e.ready).map((e) => e.ip)
    }
    const stopAt = Date.now()
    let stopped = 0
    const stopping = must([DOCKER, 'stop', victim]).then(() => (stopped = Date.now()))
    const outOfEndpoints = await until(
      `${ip} not a ready endpoint`,
      async () => !(await readyWeb()).includes(ip) && Date.now(),
      10_000,
    )
    await stopping
    await until(`${ip} out of DNS`, async () => !(await headless()).includes(ip), 10_000)
    const outOfDns = Date.now()
    const results = await load
    const failed = (from: number) => results.filter((r) => r.at >= from && !r.ok).length
    timing(`docker stop → out of the ready endpoints (ClusterIP, Ingress)`, outOfEndpoints - stopAt)
    timing(`docker stop → out of headless DNS (seen from the client)`, outOfDns - stopAt)
    t.comment(
      `docker stop returned after ${stopped - stopAt} ms; load: ${results.length} requests, ${failed(0)} failed in all, ${failed(stopAt)} after the stop, ${failed(stopAt + 2000)} after stop + 2 s`,
    )
    t.ok(results.length > 50, `the load ran (${results.length} requests)`)
    t.equal(failed(stopAt + 2000), 0, 'no request lost 2 s after the stop')
    replicas = await webReplicas()
    t.equal(replicas.size, 2)
  })

  await t.test('--scale web=4, then web=2: meshlet follows within 10 s', async (t) => {
    for (const n of [4, 2]) {
      const issued = Date.now()
      await c(['up', '-d', '--scale', `web=${n}`], 120_000)
      const t1 = Date.now()
      replicas = await webReplicas()
      t.equal(replicas.size, n, `${n} running`)
      const want = [...replicas.keys()]
      const allEndpoints = async () =>
        ((await svc('web')).ports[0].endpoints as { ip: string; ready: boolean }[])
          .filter((e) => e.ready)
          .map((e) => e.ip)
          .sort()
      // Followed = the ready endpoints (what DNS, the ClusterIP and the Ingress serve, from one Snapshot) are exactly
      // the running replicas. Polled on the admin API: a `compose exec` costs a second or more on a busy machine.
      await until(`${n} ready endpoints in /status`, async () => sameSet(await allEndpoints(), want), 10_000)
      const followed = Date.now() - t1
      t.ok(followed <= 10_000, `followed in ${followed} ms`)
      const dnsFrom = Date.now()
      await until(`${n} replicas in DNS (client)`, async () => sameSet(await headless(), want), 10_000)
      timing(
        `scale web=${n}: compose took ${t1 - issued} ms, then followed (ready endpoints) in ${followed} ms; headless DNS from the client agreed ${Date.now() - dnsFrom} ms later, in`,
        Date.now() - t1,
      )
      const seen = new Set<string>()
      for (let k = 0; k < 8; k++) seen.add(hostOf(await curl('http://web/')) ?? 'error')
      t.ok(
        [...seen].every((h) => [...replicas.values()].includes(h)),
        `http://web/ → only the ${n}: ${[...seen].join(' ')}`,
      )
    }
  })

  await t.test("every command of the README's walk-through runs as written", async (t) => {
    const v1 = compose[0] === 'docker-compose'
    const replicaIp = [...replicas.keys()][0]!
    for (const line of readmeCommands()) {
      // Already done above with the CA build argument / left to teardown.
      if (/^docker compose (build|down)\b/.test(line)) continue
      const cmd = line
        .replace(/^docker compose exec /, `${compose.join(' ')} exec -T `)
        .replace(/^docker compose /, `${compose.join(' ')} `)
        .replaceAll('198.18.0.66', replicaIp)
        .replace(/meshlet-demo-web-1\b/, v1 ? 'meshlet-demo_web_1' : 'meshlet-demo-web-1')
      const t1 = Date.now()
      const r = await run(['sh', '-c', cmd], 120_000)
      t.equal(r.code, 0, `${cmd} (${Date.now() - t1} ms)${r.code === 0 ? '' : `: ${r.stderr.slice(-500)}`}`)
    }
  })

  await t.test('check works while the stack is up', async (t) => {
    const r = await run([...compose, 'exec', '-T', 'meshlet', 'node', 'bin/meshlet.ts', 'check', '-f', '/manifests'])
    t.equal(r.code, 0, r.stderr)
    t.match(r.stderr, /0 error\(s\)/)
  })

  await t.test('without NET_ADMIN, /readyz is 503 and names the listener and why', async (t) => {
    const network = (await must([DOCKER, 'network', 'ls', '--format', '{{.Name}}']))
      .split('\n')
      .find((n) => /_mesh$/.test(n))
    t.ok(network, 'the Compose network')
    await must([
      DOCKER,
      'run',
      '-d',
      '--rm',
      '--name',
      VARIANT_NAME,
      '--network',
      network!,
      '--ip',
      VARIANT_IP,
      '--user',
      'root',
      '--cap-drop',
      'ALL',
      '--cap-add',
      'NET_BIND_SERVICE',
      '-v',
      `${join(EXAMPLE, 'manifests')}:/manifests:ro`,
      ...['NODE=no-net-admin', `DNS=${VARIANT_IP}:53`, `HTTP=${VARIANT_IP}:80`, 'HTTPS=off', 'ADMIN=0.0.0.0:9901']
        .concat(['VIP_MODE=interface', 'VIP_INTERFACE=eth0', 'SERVICE_CIDR=198.18.0.128/26'])
        .flatMap((kv) => ['-e', `MESHLET_${kv}`]),
      'meshlet:local',
    ])
    const readyz = await until(
      'a 503 naming an lb listener',
      async () => {
        const r = await client(['curl', '-s', '-w', '\n%{http_code}', `http://${VARIANT_IP}:9901/readyz`])
        return /\n503$/.test(r.stdout) && /^lb: listener TCP /m.test(r.stdout) ? r.stdout : null
      },
      30_000,
    )
    t.comment(readyz.split('\n').slice(0, 3).join(' | '))
    t.match(readyz, /^not ready: .*\blb\b/m)
    t.match(readyz, /^lb: listener TCP 198\.18\.0\.\d+:80 \(default\/web\): ip address add .* not permitted/im)
    const health = (await must([DOCKER, 'inspect', '-f', '{{.State.Health.Status}}', VARIANT_NAME])).trim()
    t.not(health, 'healthy', `the image's HEALTHCHECK does not say healthy (${health})`)
    t.equal(
      JSON.parse((await client(['curl', '-s', `http://${VARIANT_IP}:9901/status`])).stdout).planes.lb.l4Mode,
      'userspace',
      'auto falls back to userspace without NET_ADMIN',
    )
  })

  await t.test('the same Services on the nftables L4 plane (MESHLET_L4_MODE=nftables)', async (t) => {
    t.equal((await status()).planes.lb.l4Mode, 'userspace', "the example's own meshlet: MESHLET_L4_MODE userspace")
    // The README walk-through stops a replica: two running, so the spread below can show two.
    await c(['up', '-d', '--scale', 'web=2'], 120_000)
    replicas = await webReplicas()
    const network = (await must([DOCKER, 'network', 'ls', '--format', '{{.Name}}']))
      .split('\n')
      .find((n) => /_mesh$/.test(n))!
    // web.yaml only: without the LoadBalancer pool this meshlet takes no address the example's meshlet holds.
    await must([
      DOCKER,
      'run',
      '-d',
      '--name',
      NFT_NAME,
      '--network',
      network,
      '--ip',
      NFT_IP,
      '--user',
      'root',
      '--cap-drop',
      'ALL',
      '--cap-add',
      'NET_ADMIN',
      '--cap-add',
      'NET_BIND_SERVICE',
      // What the compose file's sysctls give the example's meshlet: it forwards what it DNATs back out of eth0.
      '--sysctl',
      'net.ipv4.ip_forward=1',
      '-v',
      `${join(EXAMPLE, 'manifests/web.yaml')}:/manifests/web.yaml:ro`,
      ...['NODE=nftables', `DNS=${NFT_IP}:53`, `HTTP=${NFT_IP}:80`, 'HTTPS=off', 'ADMIN=0.0.0.0:9901']
        .concat(['VIP_MODE=interface', 'VIP_INTERFACE=eth0', `SERVICE_CIDR=${NFT_CIDR}`, 'L4_MODE=nftables'])
        .flatMap((kv) => ['-e', `MESHLET_${kv}`]),
      'meshlet:local',
    ])
    const t1 = Date.now()
    const want = [...replicas.keys()]
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const st: any = await until(
      'the nftables meshlet ready with every replica',
      async () => {
        const r = await run(['curl', '-s', '-w', '\n%{http_code}', `http://${NFT_IP}:9901/readyz`])
        if (!r.stdout.endsWith('\n200')) throw new Error(`/readyz: ${r.stdout.slice(-300)} ${r.stderr.slice(-200)}`)
        const s = JSON.parse(await must(['curl', '-s', `http://${NFT_IP}:9901/status`]))
        // eslint-disable-next-line @typescript-eslint/no-explicit-any
        const web = s.snapshot.services.find((x: any) => x.key === 'default/web')
        const ready = ((web?.ports[0]?.endpoints ?? []) as { ip: string; ready: boolean }[]).filter((e) => e.ready)
        if (!sameSet(ready.map((e) => e.ip).sort(), want)) throw new Error(`ready: ${ready.map((e) => e.ip).join()}`)
        return s
      },
      60_000,
    ).catch(async (err: Error) => {
      const logs = await run([DOCKER, 'logs', '--tail', '30', NFT_NAME])
      throw new Error(`${err.message}\n${logs.stdout.slice(-3000)}${logs.stderr.slice(-3000)}`)
    })
    timing('nftables variant: docker run → ready with every replica', Date.now() - t1)
    t.equal(st.planes.lb.l4Mode, 'nftables', `l4Mode (${st.planes.lb.l4ModeReason})`)
    const vipOf = (name: string): string =>
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      st.snapshot.services.find((x: any) => x.key === `default/${name}`).clusterIPs[0]
    t.match(vipOf('web'), /^198\.18\.0\.(19\d|20[0-7])$/, `web ClusterIP from ${NFT_CIDR}`)
    const seen = new Set<string>()
    for (let k = 0; k < 8; k++) seen.add(hostOf(await curl(`http://${vipOf('web')}/`)) ?? 'error')
    t.notOk(seen.has('error'), `every request answered (${[...seen].join(' ')})`)
    t.ok(seen.size >= 2, `spread over ${seen.size} replicas`)
    t.ok(
      [...seen].every((h) => [...replicas.values()].includes(h)),
      'only web replicas answer',
    )
    const sticky = new Set<string>()
    for (let k = 0; k < 6; k++) sticky.add(hostOf(await curl(`http://${vipOf('web-sticky')}/`)) ?? 'error')
    t.equal(sticky.size, 1, `the sticky Service keeps one replica: ${[...sticky].join(' ')}`)
    t.notOk(sticky.has('error'))
    // The kernel carried it: the ClusterIP is in the table's map (the minimal image has no /etc/protocols: nft prints
    // tcp as 6), the namespace forwards, and the chains counted packets.
    const vip = vipOf('web')
    const table = await must([DOCKER, 'exec', NFT_NAME, 'nft', 'list', 'table', 'inet', 'meshlet'])
    const lines = table.split('\n').filter((l) => l.includes(vip))
    t.match(
      lines.join('\n'),
      new RegExp(`${vip.replaceAll('.', '\\.')} \\. (tcp|6) \\. (80|http) : goto \\S+`),
      `web ClusterIP ${vip} → its chain in the service-ips map`,
    )
    const forward = await must([DOCKER, 'exec', NFT_NAME, 'cat', '/proc/sys/net/ipv4/ip_forward'])
    t.equal(forward.trim(), '1', 'net.ipv4.ip_forward=1 in its network namespace')
    const metrics = await must(['curl', '-s', `http://${NFT_IP}:9901/metrics`])
    const packets = (name: string) =>
      Number(
        new RegExp(`^meshlet_lb_nft_packets_total\\{service="default/${name}"\\} (\\d+)`, 'm').exec(metrics)?.[1] ?? 0,
      )
    t.ok(packets('web') > 0, `meshlet_lb_nft_packets_total web: ${packets('web')}`)
    t.ok(packets('web-sticky') > 0, `meshlet_lb_nft_packets_total web-sticky: ${packets('web-sticky')}`)
  })
}

// tap's skip (reported as skipped, and refused in CI by .ci/no-skips.sh, which runs after this step too).
t.test('the Compose example on a real Docker engine', { timeout: 1_500_000, skip: skip ?? false }, (t) => walk(t))
