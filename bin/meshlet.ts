#!/usr/bin/env node
// meshlet CLI: parses flags, wires the components, owns start and shutdown. Nothing else lives here.
//
// Exit codes (DESIGN.md): 0 clean stop, 1 a path that cannot be read or a listener that cannot open at start
// (and, for `check`, any invalid object), 2 usage error.

import { readFileSync } from 'node:fs'
import { pino, type Logger } from 'pino'
import { Registry } from 'prom-client'
import { AdminServer } from '../admin/server.ts'
import { registerCoreMetrics } from '../admin/metrics.ts'
import { Store } from '../model/store.ts'
import { fixFor, MeshletError } from '../model/errors.ts'
import type { Plane, PlaneContext } from '../model/plane.ts'
import type { RuntimeOptions } from '../model/options.ts'
import type { KubeObject } from '../model/objects.ts'
import type { ObjectError } from '../model/snapshot.ts'
import { loadPaths } from '../config/load.ts'
import { ManifestSource } from '../config/watch.ts'
import { startDiscovery } from '../config/dns-discovery.ts'
import { formatObjectError } from '../model/validate.ts'
import { renderResolvConf } from '../dns/resolv-conf.ts'
import { startDns } from '../dns/index.ts'
import { startLb } from '../lb/index.ts'
import { startMembership } from '../membership/index.ts'
import { startProxy } from '../proxy/index.ts'
import { checkIngresses } from '../proxy/check.ts'
import { startHealth } from '../health/index.ts'
import { get } from './get.ts'
import { UP_FLAGS, UsageError, helpText, parseFlags, runtimeOptions, type UpOptions } from './cli-options.ts'
import { storeCommand } from './store-commands.ts'
import { startEtcd } from '../store/index.ts'

const VERSION: string = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version
/** How long SIGTERM lets in-flight requests and connections finish. */
const DRAIN_SECONDS = 10

const USAGE = `usage: meshlet <command> [flags]

commands:
  up -f PATH [-f PATH ...]   run: cluster DNS, L4 balancer, Ingress router and probes from the manifests (watched)
  check -f PATH [...]        validate only: exit 0 when valid, 1 with every error listed
  apply -f PATH --store etcd://HOST:PORT
                             validate as check, then write the objects to etcd in one transaction
  delete -f PATH --store etcd://HOST:PORT
                             remove the files' objects from etcd in one transaction
  resolv-conf [--namespace NS] [--nameserver ADDR]
                             print the resolv.conf a client container needs
  get services|endpoints|ingresses|pools|pods [-n NS] [-o wide|json|yaml]
                             tables of what a running meshlet serves, from its admin API (--admin)
  version                    print the version

Run "meshlet <command> --help" for the flags of a command.
`

function makeLogger(level: string, format: 'text' | 'json' = process.stdout.isTTY ? 'text' : 'json'): Logger {
  // Human-readable on a terminal, JSON otherwise (Compose, CI, log shippers); --log-format overrides.
  if (format === 'text') {
    return pino({
      level,
      transport: { target: 'pino-pretty', options: { destination: 1, translateTime: 'SYS:HH:MM:ss.l' } },
    })
  }
  return pino({ level })
}

/**
 * Starts the planes in order, pushing each into `planes` as soon as it runs: when a later one fails (a listener that
 * cannot bind), the caller closes exactly those that started.
 */
async function startPlanes(ctx: Omit<PlaneContext, 'reporter' | 'log'>, log: Logger, planes: Plane[]): Promise<void> {
  const child = (component: string) => log.child({ component })
  const health = await startHealth({ ...ctx, log: child('health'), reporter: { report() {} } })
  planes.push(health)
  const full = (component: string): PlaneContext => ({ ...ctx, log: child(component), reporter: health.reporter })
  if (ctx.options.dns) planes.push(await startDns(full('dns')))
  // etcd mode: node leases say who is alive (store/node-lease.ts), no peer probing.
  if (!ctx.options.etcd) planes.push(await startMembership(full('membership')))
  planes.push(await startLb(full('lb')))
  if (ctx.options.http || ctx.options.https) planes.push(await startProxy(full('proxy')))
}

async function closeAll(planes: readonly Plane[], deadline: number, log: Logger): Promise<void> {
  await Promise.all(
    planes.map((p) =>
      p.close(deadline).catch((err: unknown) => log.warn({ err, plane: p.name }, 'plane did not close cleanly')),
    ),
  )
}

/**
 * Error text once: causes wrapped in causes repeat their words ("bind EACCES 0.0.0.0:53: bind EACCES 0.0.0.0:53",
 * "ENOENT: ENOENT: no such file"); a ": "-separated part equal to the one before it is dropped.
 */
function oneEach(message: string): string {
  const parts = message.split(': ')
  return parts.filter((p, i) => i === 0 || p !== parts[i - 1]).join(': ')
}

/** For a listener that cannot open: which flag moves it ("; --dns moves it (now 0.0.0.0:53)"), else "". */
function bindHint(err: unknown, options: RuntimeOptions): string {
  const message = String((err as Error)?.message ?? err)
  if (!/EACCES|EADDRINUSE|EADDRNOTAVAIL|EPERM/.test(message)) return ''
  const listeners = { dns: options.dns, http: options.http, https: options.https, admin: options.admin }
  for (const [flag, addr] of Object.entries(listeners)) {
    if (addr && message.includes(`${addr.host}:${addr.port}`))
      return `; --${flag} ADDR:PORT moves it (now ${addr.host}:${addr.port}; ports below 1024 need root or CAP_NET_BIND_SERVICE)`
  }
  return '; --node-address ADDR moves NodePorts, --service-cidr moves ClusterIPs'
}

async function up(argv: readonly string[]): Promise<number> {
  const options: UpOptions = runtimeOptions(argv, process.env)
  if (options.help) {
    process.stdout.write(helpText('up', UP_FLAGS, '-f PATH [-f PATH ...] [flags]'))
    return 0
  }
  const log = makeLogger(options.logLevel, options.logFormat)
  if (options.unprivilegedDefaults.length > 0) {
    log.info(
      { chosen: options.unprivilegedDefaults },
      `not running as root: listening on ${options.unprivilegedDefaults.join(' ')}; ` +
        'give --dns, --http, --https or --node-address (or MESHLET_DNS, ...) to choose other addresses',
    )
  }
  const metrics = new Registry()
  const store = new Store({
    nodeName: options.nodeName,
    serviceCidrs: options.serviceCidrs,
    onSubscriberError: (err) => log.error({ err }, 'a plane failed to apply a snapshot'),
  })
  const core = registerCoreMetrics(metrics, store)
  // Replica Pods discovered through DNS (meshlet.io/replicas-from-dns Deployments) join the manifests' objects.
  const discovery = startDiscovery({
    store,
    resolvers: options.discoveryResolvers,
    nodeName: options.nodeName,
    log: log.child({ component: 'discovery' }),
    metrics,
  })
  const onUpdate = (objects: readonly KubeObject[], errors: readonly ObjectError[]) => {
    core.reloads.inc({ result: errors.length === 0 ? 'ok' : 'error' })
    discovery.setObjects(objects, errors)
  }
  // etcd mode (store/README.md): the objects come from etcd instead of files, through the same callback.
  const etcd = options.etcd
    ? startEtcd(options.etcd, { store, metrics, onUpdate, log, options, version: VERSION })
    : null
  const source =
    etcd?.source ?? new ManifestSource(options.files, { log: log.child({ component: 'config' }), onUpdate })
  let planes: Plane[] = []
  const admin = options.admin
    ? new AdminServer(
        {
          store,
          planes: () => planes,
          config: () => ({ ...source.status(), discovery: discovery.status() }),
          metrics,
          startedAt: Date.now(),
          version: VERSION,
          nodeName: options.nodeName,
        },
        log.child({ component: 'admin' }),
      )
    : null

  // Planes as they start; `planes` (what admin shows) only once all have, as before.
  const started: Plane[] = []
  try {
    if (admin && options.admin) await admin.listen(options.admin)
    if (etcd) started.push(...etcd.planes)
    await source.start()
    await startPlanes({ store, options, metrics }, log, started)
    planes = started
  } catch (err) {
    const hint = bindHint(err, options)
    const why = `start failed: ${oneEach((err as Error).message ?? String(err))}${hint}`
    log.fatal({ err }, why)
    // A JSON line with a stack inside is for log shippers; whoever started meshlet reads one plain line too.
    if (options.logFormat === 'json') process.stderr.write(`meshlet: ${why}\n`)
    await closeAll(started, Date.now() + 1000, log)
    if (started.length > 0) log.info({ planes: started.map((p) => p.name) }, 'closed the planes that had started')
    await source.close()
    discovery.close()
    await admin?.close()
    await etcd?.close()
    return 1
  }
  log.info({ node: options.nodeName, version: VERSION }, 'meshlet up')

  return new Promise<number>((resolve) => {
    let stopping = false
    const stop = (signal: string) => {
      if (stopping) {
        log.warn({ signal }, 'second signal: exiting now')
        resolve(0)
        return
      }
      stopping = true
      log.info({ signal, drainSeconds: DRAIN_SECONDS }, 'draining')
      void source.close()
      discovery.close()
      // Nothing awaits the drain: the promise `up` returns resolves at its end, and a failure is logged, not thrown.
      void closeAll(planes, Date.now() + DRAIN_SECONDS * 1000, log)
        .then(() => admin?.close())
        .then(() => etcd?.close())
        .catch((err: unknown) => log.error({ err }, 'admin did not close cleanly'))
        .then(() => {
          log.info('stopped')
          resolve(0)
        })
    }
    process.on('SIGTERM', () => stop('SIGTERM'))
    process.on('SIGINT', () => stop('SIGINT'))
  })
}

const CHECK_FLAGS = {
  file: UP_FLAGS.file,
  'ingress-class': UP_FLAGS['ingress-class'],
  strict: {
    type: 'boolean',
    help: 'unknown fields (not in the Kubernetes API for the kind) and duplicate fields are errors, not warnings',
  },
  help: UP_FLAGS.help,
} as const

/** Codes that are warnings unless `check --strict` (config/strict-fields.ts); `up` logs them as warnings. */
const STRICT_CODES = new Set(['MLT_CONFIG_UNKNOWN_FIELD', 'MLT_CONFIG_DUPLICATE_FIELD'])

async function check(argv: readonly string[]): Promise<number> {
  const v = parseFlags(argv, CHECK_FLAGS, process.env)
  if (v.help) {
    process.stdout.write(helpText('check', CHECK_FLAGS, '-f PATH [-f PATH ...]'))
    return 0
  }
  const files = (v.file as string[] | undefined) ?? []
  if (files.length === 0) throw new UsageError('check: at least one -f PATH is required')
  const result = await loadPaths(files)
  const strict = v.strict === true
  // The same function formats what `up` logs, so both say the same words.
  const warnings = strict ? [] : result.errors.filter((e) => STRICT_CODES.has(e.code))
  const invalid = strict ? result.errors : result.errors.filter((e) => !STRICT_CODES.has(e.code))
  for (const e of invalid) process.stdout.write(formatObjectError(e) + '\n')
  for (const e of warnings) process.stderr.write(`warning: ${formatObjectError(e)}\n`)
  // The Ingress checks `up` runs in the proxy plane (regexes, annotations, TLS Secrets), on the same objects.
  const ingressProblems = checkIngresses(result.objects, v['ingress-class'] as string)
  for (const p of ingressProblems)
    for (const why of p.reasons) process.stdout.write(`${p.source} (Ingress ${p.ingress}): ${why}\n`)
  const errors = invalid.length + ingressProblems.length
  for (const kind of result.ignoredKinds) process.stderr.write(`ignored: kind ${kind} is not used by meshlet\n`)
  // What to do, once per code, after the list: stdout keeps one line per error for scripts and grep.
  const byCode = new Map<string, number>()
  for (const e of [...invalid, ...warnings]) byCode.set(e.code, (byCode.get(e.code) ?? 0) + 1)
  if (ingressProblems.length > 0) byCode.set('MLT_PROXY_INGRESS_INVALID', ingressProblems.length)
  for (const [c, n] of byCode) process.stderr.write(`what to do (${c}, ${n}×): ${fixFor(c) ?? 'see the message'}\n`)
  const warned = warnings.length > 0 ? `, ${warnings.length} warning(s) (errors with --strict)` : ''
  process.stderr.write(
    `${result.objects.length - ingressProblems.length} valid object(s), ${errors} error(s)${warned}\n`,
  )
  return errors === 0 ? 0 : 1
}

const RESOLV_FLAGS = {
  namespace: { type: 'string', default: 'default', help: "the client's namespace (first search domain)" },
  nameserver: { type: 'string', default: '127.0.0.1', help: "meshlet's DNS address as the client reaches it" },
  'cluster-domain': UP_FLAGS['cluster-domain'],
  help: UP_FLAGS.help,
} as const

async function resolvConf(argv: readonly string[]): Promise<number> {
  const v = parseFlags(argv, RESOLV_FLAGS, process.env)
  if (v.help) {
    process.stdout.write(helpText('resolv-conf', RESOLV_FLAGS, '[--namespace NS] [--nameserver ADDR]'))
    return 0
  }
  process.stdout.write(
    renderResolvConf({
      namespace: v.namespace as string,
      nameserver: v.nameserver as string,
      clusterDomain: v['cluster-domain'] as string,
    }),
  )
  return 0
}

async function main(argv: readonly string[]): Promise<number> {
  const [command, ...rest] = argv
  try {
    switch (command) {
      case 'up':
        return await up(rest)
      case 'check':
        return await check(rest)
      case 'resolv-conf':
        return await resolvConf(rest)
      case 'get':
        return await get(rest)
      case 'apply':
      case 'delete':
        return await storeCommand(command, rest)
      case 'version':
      case '--version':
        process.stdout.write(`meshlet ${VERSION}\n`)
        return 0
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(USAGE)
        return command === undefined ? 2 : 0
      default:
        throw new UsageError(`unknown command "${command}"`)
    }
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`meshlet: ${err.message}\n\n${USAGE}`)
      return 2
    }
    if (err instanceof MeshletError) {
      process.stderr.write(`meshlet: ${oneEach(err.message)}\n`)
      const fix = fixFor(err.code)
      if (fix !== null) process.stderr.write(`meshlet: what to do: ${fix}\n`)
      return 1
    }
    throw err
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code
    // Planes may hold timers or sockets still closing; the process must not outlive its answer.
    setTimeout(() => process.exit(code), 200).unref()
  },
  (err: unknown) => {
    process.stderr.write(`meshlet: ${(err as Error).stack ?? String(err)}\n`)
    process.exit(1)
  },
)
