// The Compose example cannot run here (no Docker engine), so it is checked by reading: the manifests pass
// `meshlet check`, and docker-compose.yml, the Dockerfile and the manifests agree with each other (addresses inside
// the network, outside Docker's ip_range, listeners on meshlet's fixed address, clients' DNS pointing at it, every
// replica name a Compose service) and with the CLI (its environment parses as `meshlet up` flags).

import t from 'tap'
import { spawnSync } from 'node:child_process'
import { readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parse } from 'yaml'
import { MESHLET_BIN } from '../helpers/meshlet.ts'
import { runtimeOptions } from '../../bin/cli-options.ts'
import { loadPaths } from '../../config/load.ts'
import { parseCidr, ipToBigInt, type Cidr } from '../../model/ip.ts'
import type { Deployment, IPAddressPool } from '../../model/objects.ts'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const EXAMPLE = join(ROOT, 'examples/compose')
const MANIFESTS = join(EXAMPLE, 'manifests')

/** The parts of docker-compose.yml this test reads (compose-spec field names). */
interface ComposeService {
  readonly command?: readonly string[]
  readonly environment?: Readonly<Record<string, string>>
  readonly networks?: readonly string[] | Readonly<Record<string, { readonly ipv4_address?: string }>>
  readonly volumes?: readonly string[]
  readonly cap_add?: readonly string[]
  readonly cap_drop?: readonly string[]
  readonly deploy?: { readonly replicas?: number }
  readonly dns?: readonly string[]
  readonly dns_search?: readonly string[]
  readonly dns_opt?: readonly string[]
  readonly depends_on?: Readonly<Record<string, { readonly condition: string }>>
  readonly healthcheck?: { readonly test: readonly string[] }
}
interface ComposeFile {
  readonly networks: {
    readonly mesh: { readonly ipam: { readonly config: { subnet: string; ip_range: string; gateway: string }[] } }
  }
  readonly services: {
    readonly meshlet: ComposeService & { readonly networks: { readonly mesh: { readonly ipv4_address: string } } }
    readonly [name: string]: ComposeService | undefined
  }
}
const compose = parse(readFileSync(join(EXAMPLE, 'docker-compose.yml'), 'utf8')) as ComposeFile

function cidr(text: string): Cidr {
  const c = parseCidr(text)
  if (!c) throw new Error(`not a CIDR: ${text}`)
  return c
}
const inside = (inner: Cidr, outer: Cidr) =>
  inner.base >= outer.base && inner.base + inner.size <= outer.base + outer.size
const disjoint = (a: Cidr, b: Cidr) => a.base + a.size <= b.base || b.base + b.size <= a.base
const has = (c: Cidr, ip: string) => ipToBigInt(ip) >= c.base && ipToBigInt(ip) < c.base + c.size

t.test('meshlet check -f examples/compose/manifests passes', async (t) => {
  const r = spawnSync(process.execPath, [MESHLET_BIN, 'check', '-f', MANIFESTS], { encoding: 'utf8', timeout: 30000 })
  t.equal(r.status, 0, r.stdout + r.stderr)
  t.match(r.stderr, /\d+ valid object\(s\), 0 error\(s\)/)
  t.notMatch(r.stderr, /ignored/, "no kind is ignored: the Deployments are meshlet's")
})

t.test('docker-compose.yml agrees with the manifests and the CLI', async (t) => {
  const net = compose.networks.mesh.ipam.config[0]!
  const subnet = cidr(net.subnet)
  const ipRange = cidr(net.ip_range)
  t.ok(inside(ipRange, subnet), 'ip_range inside the subnet')

  const m = compose.services.meshlet
  const meshletIp = m.networks.mesh.ipv4_address
  t.ok(has(subnet, meshletIp) && !has(ipRange, meshletIp), 'meshlet has a fixed address Docker does not hand out')

  const [command, ...args] = m.command ?? []
  t.equal(command, 'up')
  const opts = runtimeOptions(args, { ...m.environment })
  t.equal(opts.vipMode, 'interface')
  t.equal(opts.vipInterface, 'eth0')
  t.same(opts.files, ['/manifests'])
  t.ok(
    (m.volumes ?? []).some((v) => v.startsWith('./manifests:/manifests')),
    'the manifests are mounted where -f points',
  )
  t.equal(opts.dns?.host, meshletIp, "DNS on meshlet's address")
  t.equal(
    opts.http?.host,
    meshletIp,
    "Ingress on meshlet's address (a wildcard :80 would block the ClusterIP listeners)",
  )
  const serviceCidr = opts.serviceCidrs[0]!
  t.ok(inside(serviceCidr, subnet), 'service CIDR inside the Compose network')
  t.ok(disjoint(serviceCidr, ipRange), 'service CIDR outside ip_range')
  t.notOk(has(serviceCidr, meshletIp) || has(serviceCidr, net.gateway), 'service CIDR misses meshlet and the gateway')
  t.same(
    [...(m.cap_add ?? [])].sort(),
    ['NET_ADMIN', 'NET_BIND_SERVICE'],
    'NET_ADMIN for interface mode, NET_BIND_SERVICE for 53/80',
  )
  t.same(m.cap_drop, ['ALL'])

  const loaded = await loadPaths([MANIFESTS])
  const pools = loaded.objects.filter((o): o is IPAddressPool => o.kind === 'IPAddressPool')
  t.equal(pools.length, 1)
  for (const a of pools[0]!.addresses) {
    const c = cidr(a)
    t.ok(
      inside(c, subnet) && disjoint(c, ipRange) && disjoint(c, serviceCidr),
      `pool ${a}: in the network, outside ip_range and the service CIDR`,
    )
  }

  const deployments = loaded.objects.filter((o): o is Deployment => o.kind === 'Deployment')
  t.same(deployments.map((d) => d.meta.name).sort(), ['api', 'web'])
  for (const d of deployments) {
    const svc = compose.services[d.discovery.dnsName]
    t.ok(svc, `${d.discovery.dnsName} is a Compose service`)
    t.same(svc?.networks, ['mesh'], `${d.discovery.dnsName} is on the mesh network`)
    if (d.spec.replicas !== null) t.equal(svc?.deploy?.replicas, d.spec.replicas, `${d.meta.name}: replicas agree`)
  }
  t.equal(compose.services.web?.deploy?.replicas, 3, 'one backend scaled to 3')

  const client = compose.services.client!
  t.same(client.dns, [meshletIp], "the client's DNS is meshlet")
  t.same(client.dns_search, ['default.svc.cluster.local', 'svc.cluster.local', 'cluster.local'])
  t.same(client.dns_opt, ['ndots:5'])
  t.equal(client.depends_on?.meshlet?.condition, 'service_healthy')
})

t.test('the image needs production dependencies only', async (t) => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'))
  const deps = new Set(Object.keys(pkg.dependencies))
  const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8')
  t.match(dockerfile, /^FROM node:24-slim$/m)
  t.match(dockerfile, /npm ci --omit=dev/)
  t.match(dockerfile, /^USER node$/m, 'non-root by default')
  t.match(dockerfile, /^ENTRYPOINT \["node", "bin\/meshlet.ts"\]$/m)
  const ignore = readFileSync(join(ROOT, '.dockerignore'), 'utf8').split('\n')
  for (const d of ['node_modules', 'test', 'bench']) t.ok(ignore.includes(d), `.dockerignore leaves out ${d}`)

  // Every package a runtime file imports must be a dependency (devDependencies are not in the image).
  const runtimeDirs = ['bin', 'config', 'model', 'dns', 'lb', 'proxy', 'health', 'admin', 'membership', 'store']
  const missing: string[] = []
  const walk = (dir: string): string[] => {
    let names: string[]
    try {
      names = readdirSync(dir, { withFileTypes: true }).map((e) => (e.isDirectory() ? `${e.name}/` : e.name))
    } catch {
      return []
    }
    return names.flatMap((n) => (n.endsWith('/') ? walk(join(dir, n)) : n.endsWith('.ts') ? [join(dir, n)] : []))
  }
  for (const d of runtimeDirs) {
    for (const file of walk(join(ROOT, d))) {
      const text = readFileSync(file, 'utf8')
      // `import type` is erased at run time, so a devDependency may appear there.
      for (const m of text.matchAll(
        /^\s*import\s(?!type\s)[^'"]*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/gm,
      )) {
        const spec = m[1] ?? m[2]!
        if (spec.startsWith('.') || spec.startsWith('node:') || spec.startsWith('#')) continue
        const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!
        if (!deps.has(name)) missing.push(`${file.slice(ROOT.length)} imports ${spec}`)
      }
    }
  }
  t.same(missing, [], 'no runtime import of a devDependency')
})

t.test('the README section "## Docker Compose": its manifest is valid and its commands name real things', async (t) => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
  const start = readme.indexOf('\n## Docker Compose\n')
  t.ok(start >= 0, 'the section exists')
  const section = readme.slice(start, readme.indexOf('\n## ', start + 5))
  const blocks = [...section.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]!)
  t.ok(blocks.length > 0)
  const { loadManifestText } = await import('../../config/load.ts')
  for (const b of blocks) {
    const r = loadManifestText(b, 'README.md')
    t.same(r.errors, [])
    t.same(
      r.objects.map((o) => o.kind),
      ['Deployment'],
    )
  }
  // Every Service the walk-through curls or looks up exists in the manifests.
  const loaded = await loadPaths([MANIFESTS])
  const services = new Set(loaded.objects.filter((o) => o.kind === 'Service').map((o) => o.meta.name))
  for (const m of section.matchAll(/(?:curl -s(?: -X POST -d \d+)? http:\/\/|nslookup )([a-z][-a-z]*)/g)) {
    t.ok(services.has(m[1]!), `${m[1]} is a Service of the example`)
  }
  t.match(section, /--discovery-resolver/)
})

t.test('Compose v1 and v2 both accept the example; both healthchecks mean ready', async (t) => {
  // docker-compose 1.29 rejects a top-level `name:`; both read COMPOSE_PROJECT_NAME from .env.
  t.notOk('name' in compose, 'no top-level name:')
  t.match(readFileSync(join(EXAMPLE, '.env'), 'utf8'), /^COMPOSE_PROJECT_NAME=meshlet-demo$/m)
  t.match(JSON.stringify(compose.services.meshlet.healthcheck?.test), /\/readyz/, 'compose healthcheck: /readyz')
  t.match(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'), /^HEALTHCHECK [\s\S]*\/readyz/m, 'image HEALTHCHECK: /readyz')
  // A run container would get the service's fixed address, which the running meshlet holds.
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
  t.notMatch(readme, /^docker compose run .*meshlet check/m, 'check is shown with exec, not run')
})
