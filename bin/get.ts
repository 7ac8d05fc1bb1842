// `meshlet get services|endpoints|ingresses|pools|pods [-n NS | -A] [-o wide|json|yaml] [--admin ADDR:PORT]`: what a
// running meshlet holds, as kubectl-style tables, read from its admin API's /status (the same data, at a glance).
// Nothing here changes meshlet; an unreachable admin address is exit 1 with the address named.

import { stringify } from 'yaml'
import { AdminError } from '../admin/errors.ts'
import { hostname } from 'node:os'
import { parseCidr } from '../model/ip.ts'
import { UP_FLAGS, UsageError, etcdOptions, helpText, parseFlags, parseListen } from './cli-options.ts'

export const GET_FLAGS = {
  namespace: { type: 'string', short: 'n', default: 'default', help: 'the namespace shown' },
  'all-namespaces': { type: 'boolean', short: 'A', help: 'every namespace (a NAMESPACE column)' },
  output: { type: 'string', short: 'o', help: 'wide (more columns), json or yaml (the rows as data)' },
  admin: { type: 'string', default: UP_FLAGS.admin.default, help: "the running meshlet's admin address" },
  help: { type: 'boolean', short: 'h', help: 'show this help' },
  store: {
    type: 'string',
    help: 'etcd://HOST:PORT[,HOST:PORT...]: read the stored objects instead of a running meshlet (store/README.md)',
  },
  'etcd-prefix': UP_FLAGS['etcd-prefix'],
  'etcd-cacert': UP_FLAGS['etcd-cacert'],
  'etcd-cert': UP_FLAGS['etcd-cert'],
  'etcd-key': UP_FLAGS['etcd-key'],
  'service-cidr': {
    ...UP_FLAGS['service-cidr'],
    help: 'with --store: where ClusterIPs are allocated from, as on the nodes',
  },
} as const

const RESOURCES = ['services', 'endpoints', 'ingresses', 'pools', 'pods'] as const
type Resource = (typeof RESOURCES)[number]
/** kubectl's short and singular names. */
const ALIASES: Readonly<Record<string, Resource>> = {
  svc: 'services',
  service: 'services',
  ep: 'endpoints',
  endpoint: 'endpoints',
  ing: 'ingresses',
  ingress: 'ingresses',
  pool: 'pools',
  ipaddresspools: 'pools',
  po: 'pods',
  pod: 'pods',
}

interface Endpoint {
  ip: string
  port: number
  ready: boolean
  serving: boolean
  terminating: boolean
  pod?: string | null
  ejected?: unknown
}
interface ServicePort {
  name: string
  protocol: string
  port: number
  targetPort: number | string
  nodePort: number | null
  endpoints: Endpoint[]
}
interface Service {
  key: string
  type: string
  headless: boolean
  clusterIPs: string[]
  externalName?: string | null
  loadBalancerIPs: string[]
  loadBalancerPool: string | null
  loadBalancerPending: string | null
  ports: ServicePort[]
}
interface Pod {
  key: string
  ip: string | null
  node: string | null
  ready: boolean
  health: { reason?: string | null; restartCount?: number } | null
}
interface Status {
  snapshot: { services: Service[]; pods: Pod[] } | null
  planes: {
    proxy?: {
      ingresses: { ingress: string; state: string; reasons: string[] }[]
      routes: { host: string | null; path: string; ingress: string; service: string | null; endpoints: number }[]
    }
    lb?: { pools: { pool: string; capacity: number; assigned: number; advertised: boolean }[] }
  }
}

type Row = Record<string, string | number>

function splitKey(key: string): [string, string] {
  const slash = key.indexOf('/')
  return slash === -1 ? ['', key] : [key.slice(0, slash), key.slice(slash + 1)]
}

/** ready/total over the distinct endpoints of all ports. */
function endpointCounts(svc: Service): { ready: Endpoint[]; notReady: Endpoint[]; ejected: Endpoint[] } {
  const seen = new Map<string, Endpoint>()
  for (const p of svc.ports) for (const e of p.endpoints) seen.set(`${e.ip}:${e.port}`, e)
  const all = [...seen.values()]
  return {
    ready: all.filter((e) => e.ready && e.ejected === undefined),
    notReady: all.filter((e) => !e.ready),
    ejected: all.filter((e) => e.ready && e.ejected !== undefined),
  }
}

function list(items: readonly string[], max: number): string {
  if (items.length === 0) return '<none>'
  return items.length > max ? `${items.slice(0, max).join(',')} + ${items.length - max} more...` : items.join(',')
}

function rows(resource: Resource, status: Status, wide: boolean): { namespace: string; row: Row }[] {
  const services = status.snapshot?.services ?? []
  switch (resource) {
    case 'services':
      return services.map((svc) => {
        const [namespace, name] = splitKey(svc.key)
        const { ready, notReady, ejected } = endpointCounts(svc)
        const ports = svc.ports.map((p) => `${p.port}${p.nodePort ? `:${p.nodePort}` : ''}/${p.protocol}`)
        const external = svc.externalName ?? (svc.loadBalancerIPs.length > 0 ? svc.loadBalancerIPs.join(',') : null)
        const row: Row = {
          NAME: name,
          TYPE: svc.type,
          'CLUSTER-IP': svc.headless ? 'None' : svc.clusterIPs.join(',') || '<none>',
          'EXTERNAL-IP': external ?? (svc.loadBalancerPending !== null ? '<pending>' : '<none>'),
          'PORT(S)': ports.join(',') || '<none>',
          ENDPOINTS: `${ready.length}/${ready.length + notReady.length + ejected.length}`,
        }
        if (wide) {
          row.POOL = svc.loadBalancerPool ?? '<none>'
          row['NOT-READY'] = list(
            notReady.map((e) => `${e.ip}:${e.port}`),
            3,
          )
          row.EJECTED = list(
            ejected.map((e) => `${e.ip}:${e.port}`),
            3,
          )
        }
        return { namespace, row }
      })
    case 'endpoints':
      return services.map((svc) => {
        const [namespace, name] = splitKey(svc.key)
        const { ready, notReady, ejected } = endpointCounts(svc)
        const row: Row = {
          NAME: name,
          ENDPOINTS: list(
            ready.map((e) => `${e.ip}:${e.port}`),
            wide ? 100 : 3,
          ),
        }
        row['NOT-READY'] = list(
          notReady.map((e) => `${e.ip}:${e.port}`),
          wide ? 100 : 3,
        )
        if (wide)
          row.EJECTED = list(
            ejected.map((e) => `${e.ip}:${e.port}`),
            100,
          )
        return { namespace, row }
      })
    case 'ingresses': {
      const routes = status.planes.proxy?.routes ?? []
      return (status.planes.proxy?.ingresses ?? []).map((ing) => {
        const [namespace, name] = splitKey(ing.ingress)
        const mine = routes.filter((r) => r.ingress === ing.ingress)
        const hosts = [...new Set(mine.map((r) => r.host ?? '*'))]
        const row: Row = { NAME: name, HOSTS: list(hosts, 3), ROUTES: mine.length, STATE: ing.state }
        if (wide) {
          row.BACKENDS = list(
            mine.map((r) => `${r.host ?? '*'}${r.path}→${r.service ?? '<none>'}(${r.endpoints})`),
            100,
          )
          row.REASONS = ing.reasons.join('; ') || '<none>'
        }
        return { namespace, row }
      })
    }
    case 'pools':
      return (status.planes.lb?.pools ?? []).map((p) => {
        const row: Row = { NAME: p.pool, ASSIGNED: p.assigned, CAPACITY: p.capacity }
        if (wide) row.ADVERTISED = p.advertised ? 'yes' : 'no'
        return { namespace: '', row }
      })
    case 'pods':
      return (status.snapshot?.pods ?? []).map((p) => {
        const [namespace, name] = splitKey(p.key)
        const row: Row = {
          NAME: name,
          READY: p.ready ? 'true' : 'false',
          REASON: p.health?.reason ?? (p.ready ? '<none>' : 'not ready'),
          IP: p.ip ?? '<none>',
        }
        if (wide) {
          row.NODE = p.node ?? '<none>'
          row.RESTARTS = p.health?.restartCount ?? 0
        }
        return { namespace, row }
      })
  }
}

/** kubectl's table: upper-case headers, columns padded to their widest cell and 3 spaces apart. */
export function renderTable(table: readonly Row[]): string {
  const first = table[0]
  if (first === undefined) return ''
  const cols = Object.keys(first)
  const width = cols.map((c) => Math.max(c.length, ...table.map((r) => String(r[c] ?? '').length)))
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(width[i]!)))
      .join('   ')
      .trimEnd()
  return [line(cols), ...table.map((r) => line(cols.map((c) => String(r[c] ?? ''))))].join('\n') + '\n'
}

async function fromAdmin(address: string): Promise<Status> {
  const admin = parseListen('admin', address)
  if (admin === null) throw new UsageError('--admin: an address is needed')
  const host = admin.host.includes(':') ? `[${admin.host}]` : admin.host
  const url = `http://${host}:${admin.port}/status`
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(5000) })
    if (res.status !== 200) throw new Error(`HTTP ${res.status}`)
    return (await res.json()) as Status
  } catch (err) {
    const cause = (err as Error & { cause?: Error }).cause?.message ?? (err as Error).message
    throw new AdminError(
      'MLT_ADMIN_UNREACHABLE',
      `cannot read ${url}: ${cause} (is meshlet up, with --admin ${admin.host}:${admin.port}?)`,
    )
  }
}

/**
 * The objects in etcd built into a Snapshot as a node builds it (store/read.ts): Services, endpoints, Pods and
 * pools without any node running. Readiness is what the objects declare (probe verdicts live on the nodes), and
 * addresses are what a node with these --service-cidr allocates from the objects.
 */
async function fromStore(
  etcd: NonNullable<ReturnType<typeof etcdOptions>>,
  v: Record<string, string | string[] | boolean | undefined>,
  resource: Resource,
): Promise<Status> {
  if (resource === 'ingresses')
    throw new UsageError('get ingresses: the routes are compiled by a running node; use --admin, not --store')
  const serviceCidrs = (v['service-cidr'] as string).split(',').map((text) => {
    const c = parseCidr(text.trim())
    if (!c) throw new UsageError(`--service-cidr: "${text}" is not a CIDR`)
    return c
  })
  // Loaded only here: `get` against a running node (the common case) starts without the etcd client.
  const [{ snapshotStatus }, { poolUsage }, { connect }, { readStore }, { StoreError }] = await Promise.all([
    import('../admin/server.ts'),
    import('../lb/pool-usage.ts'),
    import('../store/client.ts'),
    import('../store/read.ts'),
    import('../store/errors.ts'),
  ])
  const client = connect(etcd)
  try {
    const view = await readStore(client, etcd.prefix, { nodeName: hostname(), serviceCidrs }).catch((err: unknown) => {
      throw new StoreError('MLT_STORE_UNREACHABLE', `cannot read ${etcd.prefix} from etcd: ${(err as Error).message}`)
    })
    return {
      snapshot: snapshotStatus(view.snapshot) as Status['snapshot'],
      planes: { lb: { pools: poolUsage(view.snapshot) } },
    }
  } finally {
    client.close()
  }
}

export async function get(argv: readonly string[]): Promise<number> {
  const [what, ...rest] = argv
  if (what === undefined || what === '--help' || what === '-h') {
    process.stdout.write(helpText('get', GET_FLAGS, `${RESOURCES.join('|')} [flags]`))
    return what === undefined ? 2 : 0
  }
  const resource = (RESOURCES as readonly string[]).includes(what) ? (what as Resource) : ALIASES[what]
  if (resource === undefined) throw new UsageError(`get: unknown resource "${what}" (one of ${RESOURCES.join(', ')})`)
  const v = parseFlags(rest, GET_FLAGS, {})
  if (v.help) {
    process.stdout.write(helpText('get', GET_FLAGS, `${RESOURCES.join('|')} [flags]`))
    return 0
  }
  const output = v.output as string | undefined
  if (output !== undefined && output !== 'wide' && output !== 'json' && output !== 'yaml')
    throw new UsageError(`--output: expected wide, json or yaml, got "${output}"`)
  const etcd = etcdOptions(v)
  const status = etcd === null ? await fromAdmin(v.admin as string) : await fromStore(etcd, v, resource)
  const all = v['all-namespaces'] === true
  const namespace = v.namespace as string
  const selected = rows(resource, status, output === 'wide').filter(
    (r) => all || r.namespace === '' || r.namespace === namespace,
  )
  const table = selected.map((r) => (all && resource !== 'pools' ? { NAMESPACE: r.namespace, ...r.row } : r.row))
  if (output === 'json') process.stdout.write(JSON.stringify(table, null, 2) + '\n')
  else if (output === 'yaml') process.stdout.write(stringify(table))
  else if (table.length === 0)
    process.stderr.write(
      resource === 'pools' || all ? 'No resources found\n' : `No resources found in ${namespace} namespace.\n`,
    )
  else process.stdout.write(renderTable(table))
  return 0
}
