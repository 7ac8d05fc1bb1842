// Flag and environment parsing for the CLI (DESIGN.md "CLI contract"). Every flag of `up` can also come from a
// MESHLET_* variable (--vip-mode → MESHLET_VIP_MODE), which is how Compose files set them; a flag wins over the
// environment, and both win over DEFAULT_OPTIONS (model/options.ts). Usage errors are UsageError (exit code 2).

import { parseArgs } from 'node:util'
import { DEFAULT_OPTIONS, type EtcdOptions, type ListenAddress, type RuntimeOptions } from '../model/options.ts'
import { normalizePrefix, parseStoreUrl } from '../store/client.ts'
import { parseCidr, type Cidr } from '../model/ip.ts'
import { isIP } from 'node:net'
import { CliError } from './errors.ts'

/** A usage error: exit code 2, with the usage text. */
export class UsageError extends CliError {
  constructor(message: string) {
    super('MLT_CLI_USAGE', message)
    this.name = 'UsageError'
  }
}

interface FlagSpec {
  readonly type: 'string' | 'boolean'
  readonly multiple?: boolean
  readonly short?: string
  readonly default?: string
  readonly help: string
}

export const UP_FLAGS = {
  file: {
    type: 'string',
    multiple: true,
    short: 'f',
    help: 'manifest file, directory or - (stdin); repeatable; watched',
  },
  node: { type: 'string', help: "this node's name (default: hostname)" },
  'node-address': {
    type: 'string',
    help: 'where NodePorts and health-check node ports listen (default: all addresses as root, 127.0.0.1 otherwise)',
  },
  dns: {
    type: 'string',
    default: listenText(DEFAULT_OPTIONS.dns),
    help: 'cluster DNS listener, UDP and TCP, ADDR:PORT or off; not root: 127.0.0.1:5353',
  },
  http: {
    type: 'string',
    default: listenText(DEFAULT_OPTIONS.http),
    help: 'Ingress HTTP listener, ADDR:PORT or off; not root: 127.0.0.1:8080',
  },
  https: {
    type: 'string',
    default: listenText(DEFAULT_OPTIONS.https),
    help: 'Ingress HTTPS listener, ADDR:PORT or off; not root: 127.0.0.1:8443',
  },
  admin: {
    type: 'string',
    default: listenText(DEFAULT_OPTIONS.admin),
    help: 'admin API (/healthz /readyz /status /metrics), ADDR:PORT or off',
  },
  upstream: {
    type: 'string',
    multiple: true,
    help: 'DNS forwarder ADDR[:PORT], repeatable (default: /etc/resolv.conf)',
  },
  'allow-recursion': {
    type: 'string',
    multiple: true,
    help: "CIDR whose clients DNS forwards outside names for, besides loopback and this node's networks; repeatable",
  },
  'discovery-resolver': {
    type: 'string',
    multiple: true,
    help: 'DNS server ADDR[:PORT] that resolves meshlet.io/replicas-from-dns names, repeatable (default: /etc/resolv.conf)',
  },
  'cluster-domain': { type: 'string', default: DEFAULT_OPTIONS.clusterDomain, help: 'the cluster DNS zone' },
  'service-cidr': {
    type: 'string',
    default: DEFAULT_OPTIONS.serviceCidrs.map((c) => c.text).join(','),
    help: 'where ClusterIPs are allocated from; comma-separated for dual stack',
  },
  'vip-mode': {
    type: 'string',
    default: DEFAULT_OPTIONS.vipMode,
    help: 'loopback | interface | none: how Service addresses become reachable',
  },
  'vip-interface': { type: 'string', help: 'interface Service addresses are added to in interface mode' },
  'dns-ttl': { type: 'string', default: String(DEFAULT_OPTIONS.dnsTtl), help: 'TTL in seconds of in-zone records' },
  'dns-workers': {
    type: 'string',
    default: String(DEFAULT_OPTIONS.dnsWorkers),
    help: 'threads serving DNS: 1 = the main thread, N = N worker threads sharing the address (SO_REUSEPORT)',
  },
  'ingress-class': {
    type: 'string',
    default: DEFAULT_OPTIONS.ingressClass,
    help: 'the IngressClass name meshlet serves',
  },
  // Off by default (issue 19): measured +18 to +66 µs of CPU per proxied request with it on (wrk, 50 connections,
  // JSON to a file, 2 loaded cores), a third or more of the proxy's own cost, and 420 bytes per request.
  'access-log': {
    type: 'string',
    default: DEFAULT_OPTIONS.accessLog ? 'on' : 'off',
    help: 'on | off: one log line per proxied request',
  },
  'max-connections': {
    type: 'string',
    help: 'client connections per Ingress listener (default: from RLIMIT_NOFILE, keeping descriptors for probes, DNS, admin)',
  },
  'trust-forwarded-from': {
    type: 'string',
    multiple: true,
    help: 'CIDR whose X-Forwarded-* headers are trusted; repeatable',
  },
  'exec-prefix': { type: 'string', help: 'prefix for exec probes, e.g. "docker exec {pod}"' },
  'on-liveness-failure': {
    type: 'string',
    help: 'command run when a liveness probe fails ({pod} {namespace} {ip} {container})',
  },
  'peer-port': {
    type: 'string',
    default: String(DEFAULT_OPTIONS.peerPort),
    help: "admin port of the other nodes, whose /healthz decides which node announces LoadBalancer addresses (a Node's meshlet.io/admin-port annotation wins)",
  },
  'l4-mode': {
    type: 'string',
    default: DEFAULT_OPTIONS.l4Mode,
    help: 'userspace | nftables | auto: the L4 data plane (auto: nftables when nft works here, else userspace)',
  },
  'log-level': {
    type: 'string',
    default: DEFAULT_OPTIONS.logLevel,
    help: 'pino level: fatal error warn info debug trace silent',
  },
  'log-format': { type: 'string', help: 'text | json (default: text on a terminal, json otherwise)' },
  help: { type: 'boolean', short: 'h', help: 'show this help' },
  // etcd mode (issue 20, store/README.md); the file provider stays the default.
  store: {
    type: 'string',
    default: 'file',
    help: 'file (the -f manifests) or etcd://HOST:PORT[,HOST:PORT...]: objects, node leases and elections from etcd',
  },
  'etcd-prefix': { type: 'string', default: '/meshlet', help: 'key prefix of everything meshlet keeps in etcd' },
  'etcd-cacert': { type: 'string', help: "PEM CA that verifies etcd's certificate (turns TLS on)" },
  'etcd-cert': { type: 'string', help: 'PEM client certificate for etcd (with --etcd-key; turns TLS on)' },
  'etcd-key': { type: 'string', help: 'PEM private key of --etcd-cert' },
  'node-lease-seconds': {
    type: 'string',
    default: String(DEFAULT_OPTIONS.nodeLeaseSeconds),
    help: "TTL of this node's etcd lease: how long after it stops a dead node still owns LoadBalancer addresses",
  },
  // Issue 16: the Ingress listeners on every core the process may use, as nginx's `worker_processes auto`.
  workers: {
    type: 'string',
    default: String(DEFAULT_OPTIONS.proxyWorkers),
    help: 'threads serving the Ingress http/https listeners: 1 = the main thread, N = N worker threads sharing the ports (SO_REUSEPORT)',
  },
} as const satisfies Record<string, FlagSpec>

/**
 * Listen defaults for a user who is not root (issue 19): ports below 1024 cannot be bound, and a newcomer's NodePorts
 * should not open on every interface. Each applies only when neither its flag nor its MESHLET_* variable is given.
 */
export const UNPRIVILEGED_DEFAULTS = {
  dns: '127.0.0.1:5353',
  http: '127.0.0.1:8080',
  https: '127.0.0.1:8443',
  'node-address': '127.0.0.1',
} as const

export function envName(flag: string): string {
  return 'MESHLET_' + flag.toUpperCase().replace(/-/g, '_')
}

export function helpText(command: string, flags: Record<string, FlagSpec>, synopsis: string): string {
  const lines = [`usage: meshlet ${command} ${synopsis}`, '']
  for (const [name, spec] of Object.entries(flags)) {
    const short = spec.short ? `-${spec.short}, ` : '    '
    const def = spec.default !== undefined ? ` (default ${spec.default})` : ''
    const env = name === 'help' ? '' : `  [${envName(name)}]`
    lines.push(`  ${short}--${name.padEnd(22)} ${spec.help}${def}${env}`)
  }
  return lines.join('\n') + '\n'
}

/** Parses flags, then fills what is missing from the environment, then from defaults. */
export function parseFlags(
  argv: readonly string[],
  flags: Record<string, FlagSpec>,
  env: NodeJS.ProcessEnv,
): Record<string, string | string[] | boolean | undefined> {
  let parsed
  try {
    const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }> = {}
    for (const [k, v] of Object.entries(flags)) {
      options[k] = { type: v.type, ...(v.multiple ? { multiple: true } : {}), ...(v.short ? { short: v.short } : {}) }
    }
    parsed = parseArgs({ args: [...argv], options, allowPositionals: false, strict: true })
  } catch (err) {
    throw new UsageError((err as Error).message)
  }
  const out = { ...parsed.values } as Record<string, string | string[] | boolean | undefined>
  for (const [name, spec] of Object.entries(flags)) {
    if (out[name] !== undefined || name === 'help') continue
    const fromEnv = env[envName(name)]
    if (fromEnv !== undefined && fromEnv !== '') {
      // Repeatable flags take a comma- or whitespace-separated list from the environment.
      out[name] = spec.multiple ? fromEnv.split(/[\s,]+/).filter(Boolean) : fromEnv
    } else if (spec.default !== undefined) out[name] = spec.default
  }
  return out
}

/** The flag text of a listen address: "ADDR:PORT", "[v6]:PORT" or "off" (parseListen's inverse). */
function listenText(listen: ListenAddress | null): string {
  if (listen === null) return 'off'
  return isIP(listen.host) === 6 ? `[${listen.host}]:${listen.port}` : `${listen.host}:${listen.port}`
}

/** "ADDR:PORT", "[v6]:PORT" or "off". */
export function parseListen(flag: string, value: string): ListenAddress | null {
  if (value === 'off') return null
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(value) ?? /^([^:]+):(\d+)$/.exec(value)
  if (!m || !isIP(m[1]!) || Number(m[2]) > 65535) {
    throw new UsageError(`--${flag}: expected ADDR:PORT or off, got "${value}"`)
  }
  return { host: m[1]!, port: Number(m[2]) }
}

/** "ADDR", "ADDR:PORT", "[v6]:PORT" → "host:port" with port 53 by default. */
export function parseUpstream(value: string): string {
  let host: string
  let port = 53
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(value)
  if (v6) {
    host = v6[1]!
    if (v6[2]) port = Number(v6[2])
  } else if (isIP(value) === 6) host = value
  else {
    const [h, p] = value.split(':')
    host = h!
    if (p !== undefined) port = Number(p)
  }
  if (!isIP(host) || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new UsageError(`--upstream: expected ADDR[:PORT], got "${value}"`)
  }
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`
}

function parseCidrList(flag: string, values: readonly string[]): Cidr[] {
  return values.map((v) => {
    const c = parseCidr(v)
    if (!c) throw new UsageError(`--${flag}: "${v}" is not a CIDR`)
    return c
  })
}

const LOG_LEVELS = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])

export interface UpOptions extends RuntimeOptions {
  readonly help: boolean
  /** --log-format: text or json. */
  readonly logFormat: 'text' | 'json'
  /** The unprivileged defaults applied ("--dns 127.0.0.1:5353", ...): empty as root or when every flag was given. */
  readonly unprivilegedDefaults: readonly string[]
}

/**
 * `uid` is the effective user (process.geteuid()); `tty` whether stdout is a terminal (the log format's default).
 */
export function runtimeOptions(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  uid: number = process.geteuid?.() ?? 0,
  tty: boolean = process.stdout.isTTY === true,
): UpOptions {
  const v = parseFlags(argv, UP_FLAGS, env)
  const unprivilegedDefaults: string[] = []
  if (uid !== 0) {
    // Which listen flags were given, by flag or environment: parse again without defaults.
    const noDefaults = Object.fromEntries(
      Object.entries(UP_FLAGS).map(([k, spec]) => [k, { ...spec, default: undefined }] as const),
    )
    const given = parseFlags(argv, noDefaults, env)
    for (const [flag, value] of Object.entries(UNPRIVILEGED_DEFAULTS)) {
      if (given[flag] !== undefined) continue
      v[flag] = value
      unprivilegedDefaults.push(`--${flag} ${value}`)
    }
  }
  const logFormat = (v['log-format'] as string | undefined) ?? (tty ? 'text' : 'json')
  if (logFormat !== 'text' && logFormat !== 'json')
    throw new UsageError(`--log-format: expected text or json, got "${logFormat}"`)
  const str = (k: string) => v[k] as string | undefined
  const list = (k: string) => (v[k] as string[] | undefined) ?? []
  const files = list('file')
  const etcd = etcdOptions(v)
  if (files.length === 0 && etcd === null && !v.help) throw new UsageError('up: at least one -f PATH is required')
  if (files.length > 0 && etcd !== null) throw new UsageError('up: -f and --store etcd://... exclude each other')
  const lease = Number(str('node-lease-seconds'))
  if (!Number.isInteger(lease) || lease < 2 || lease > 3600)
    throw new UsageError(`--node-lease-seconds: expected 2-3600, got "${str('node-lease-seconds')}"`)
  const vipMode = str('vip-mode')!
  if (vipMode !== 'loopback' && vipMode !== 'interface' && vipMode !== 'none') {
    throw new UsageError(`--vip-mode: expected loopback, interface or none, got "${vipMode}"`)
  }
  if (vipMode === 'interface' && !str('vip-interface'))
    throw new UsageError('--vip-mode interface needs --vip-interface IFACE')
  const serviceCidrs = parseCidrList(
    'service-cidr',
    str('service-cidr')!
      .split(',')
      .map((s) => s.trim()),
  )
  if (new Set(serviceCidrs.map((c) => c.family)).size !== serviceCidrs.length) {
    throw new UsageError('--service-cidr: at most one CIDR per address family')
  }
  const ttl = Number(str('dns-ttl'))
  if (!Number.isInteger(ttl) || ttl < 0 || ttl > 3600)
    throw new UsageError(`--dns-ttl: expected 0-3600, got "${str('dns-ttl')}"`)
  const dnsWorkers = Number(str('dns-workers'))
  if (!Number.isInteger(dnsWorkers) || dnsWorkers < 1 || dnsWorkers > 64)
    throw new UsageError(`--dns-workers: expected 1-64, got "${str('dns-workers')}"`)
  const proxyWorkers = Number(str('workers'))
  if (!Number.isInteger(proxyWorkers) || proxyWorkers < 1 || proxyWorkers > 64)
    throw new UsageError(`--workers: expected 1-64, got "${str('workers')}"`)
  const accessLog = str('access-log')
  if (accessLog !== 'on' && accessLog !== 'off')
    throw new UsageError(`--access-log: expected on or off, got "${accessLog}"`)
  const maxConnRaw = str('max-connections')
  const maxConnections = maxConnRaw === undefined ? DEFAULT_OPTIONS.maxConnections : Number(maxConnRaw)
  if (maxConnections !== null && (!Number.isInteger(maxConnections) || maxConnections < 1 || maxConnections > 1e7))
    throw new UsageError(`--max-connections: expected a positive integer, got "${maxConnRaw}"`)
  const level = str('log-level')!
  if (!LOG_LEVELS.has(level)) throw new UsageError(`--log-level: unknown level "${level}"`)
  const peerPort = Number(str('peer-port'))
  if (!Number.isInteger(peerPort) || peerPort < 1 || peerPort > 65535)
    throw new UsageError(`--peer-port: expected 1-65535, got "${str('peer-port')}"`)
  const l4Mode = str('l4-mode')!
  if (l4Mode !== 'userspace' && l4Mode !== 'nftables' && l4Mode !== 'auto')
    throw new UsageError(`--l4-mode: expected userspace, nftables or auto, got "${l4Mode}"`)
  const nodeAddress = str('node-address') ?? DEFAULT_OPTIONS.nodeAddress
  if (nodeAddress !== null && !isIP(nodeAddress))
    throw new UsageError(`--node-address: "${nodeAddress}" is not an address`)
  const domain = str('cluster-domain')!.replace(/\.$/, '').toLowerCase()
  if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/.test(domain)) {
    throw new UsageError(`--cluster-domain: "${domain}" is not a DNS name`)
  }
  return {
    help: v.help === true,
    logFormat,
    unprivilegedDefaults,
    files,
    nodeName: str('node') ?? DEFAULT_OPTIONS.nodeName,
    nodeAddress,
    dns: parseListen('dns', str('dns')!),
    http: parseListen('http', str('http')!),
    https: parseListen('https', str('https')!),
    admin: parseListen('admin', str('admin')!),
    upstreams: list('upstream').map(parseUpstream),
    allowRecursion: parseCidrList('allow-recursion', list('allow-recursion')),
    discoveryResolvers: list('discovery-resolver').map((r) => {
      try {
        return parseUpstream(r)
      } catch {
        throw new UsageError(`--discovery-resolver: expected ADDR[:PORT], got "${r}"`)
      }
    }),
    clusterDomain: domain,
    serviceCidrs,
    vipMode,
    vipInterface: str('vip-interface') ?? DEFAULT_OPTIONS.vipInterface,
    dnsTtl: ttl,
    dnsWorkers,
    ingressClass: str('ingress-class')!,
    accessLog: accessLog === 'on',
    maxConnections,
    trustForwardedFrom: parseCidrList('trust-forwarded-from', list('trust-forwarded-from')),
    execPrefix: str('exec-prefix') ?? DEFAULT_OPTIONS.execPrefix,
    onLivenessFailure: str('on-liveness-failure') ?? DEFAULT_OPTIONS.onLivenessFailure,
    logLevel: level,
    peerPort,
    l4Mode,
    etcd,
    nodeLeaseSeconds: lease,
    proxyWorkers,
  }
}

/** --store and the --etcd-* flags → where etcd is (null: the file provider). `apply` and `delete` share it. */
export function etcdOptions(v: Record<string, string | string[] | boolean | undefined>): EtcdOptions | null {
  const store = v.store as string | undefined
  if (store === undefined || store === 'file') return null
  const str = (k: string) => (v[k] as string | undefined) ?? null
  try {
    return {
      endpoints: parseStoreUrl(store),
      prefix: normalizePrefix(str('etcd-prefix') ?? '/meshlet'),
      cacert: str('etcd-cacert'),
      cert: str('etcd-cert'),
      key: str('etcd-key'),
    }
  } catch (err) {
    throw new UsageError((err as Error).message)
  }
}
