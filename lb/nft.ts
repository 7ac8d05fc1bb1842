// --l4-mode nftables: the kernel carries L4 traffic. Each Snapshot becomes one nft transaction, fed to a long-running
// `nft -i` (lb/nft-shell.ts), on meshlet's own table (`inet meshlet`, laid out in lb/nft-rules.ts) that changes only
// what differs from the last one; conntrack keeps established flows on their endpoint, so a Snapshot never disturbs
// them. The table is replaced whole at start
// (a stale one from a crash goes in the same transaction) and deleted at stop; no other table is ever touched.
// Health-check node ports and --vip-interface addresses work as in the userspace plane.

import { readFile, writeFile } from 'node:fs/promises'
import { Counter, Gauge, type Registry } from 'prom-client'
import type { Logger } from 'pino'
import type { Plane, PlaneContext } from '../model/plane.ts'
import type { ServiceState, Snapshot } from '../model/snapshot.ts'
import { runChecked, runChild } from '../model/child-process.ts'
import { LbError } from './errors.ts'
import { reconcileHealthChecks, type HealthCheckServer } from './health-check-server.ts'
import { poolUsage, type PoolUsage } from './pool-usage.ts'
import { VipInterface } from './vip-interface.ts'
import { NftShell } from './nft-shell.ts'
import {
  EMPTY_STATE,
  TABLE,
  baseTable,
  desiredState,
  interfaceAddresses,
  transaction,
  type NftState,
} from './nft-rules.ts'

/** A transaction is small and local; one that hangs must not hold every later Snapshot. */
const NFT_TIMEOUT_MS = 10_000
const CONNTRACK_TIMEOUT_MS = 5_000
/** `conntrack -L` output past which entries are not counted per Service (about 200 bytes an entry). */
const CONNTRACK_MAX_OUTPUT = 8 * 1024 * 1024
/** After a failed transaction, the next try rebuilds the table whole. */
const RETRY_MS = 1_000
/** /metrics scrapes closer together than this reuse the last counter read. */
const COUNTER_CACHE_MS = 1_000
const ROUTE_LOCALNET = '/proc/sys/net/ipv4/conf/all/route_localnet'

/** Null when `nft` can program tables in this network namespace, else why not. */
export async function nftUnavailable(): Promise<string | null> {
  try {
    // Listing needs CAP_NET_ADMIN on nfnetlink, as every change does.
    await runChecked(['nft', 'list', 'tables'], { timeoutMs: 5_000 })
    return null
  } catch (err) {
    return (err as Error).message
  }
}

interface NftMetrics {
  readonly packets: Counter<'service'>
  readonly bytes: Counter<'service'>
  readonly transactions: Counter<'result'>
  readonly conntrack: Gauge<'service'>
}

export class NftPlane implements Plane {
  readonly name = 'lb'
  readonly #ctx: PlaneContext
  readonly #log: Logger
  readonly #reason: string
  readonly #shell: NftShell
  readonly #metrics: NftMetrics
  readonly #vip: VipInterface | null
  readonly #healthChecks = new Map<string, HealthCheckServer>()
  /** What the table holds now; null when it must be rebuilt whole (start, after a failure). */
  #programmed: NftState | null = null
  #appliedVersion = -1
  #pending: Snapshot | null = null
  #latest: Snapshot | null = null
  #running: Promise<void> | null = null
  #retry: NodeJS.Timeout | null = null
  #lastError: string | null = null
  #lastSync: { version: number; seconds: number; changed: boolean } | null = null
  #pools: PoolUsage[] = []
  #routeLocalnet: string | null = null
  #counterRead: { at: number; p: Promise<void> } | null = null
  #unsubscribe: () => void = () => {}
  #closing = false

  constructor(ctx: PlaneContext, reason: string) {
    this.#ctx = ctx
    this.#log = ctx.log.child({ sub: 'nft' })
    this.#reason = reason
    this.#shell = new NftShell(this.#log, NFT_TIMEOUT_MS)
    this.#metrics = nftMetrics(ctx.metrics, () => this.#readCounters())
    this.#vip =
      ctx.options.vipMode === 'interface' && ctx.options.vipInterface
        ? new VipInterface(ctx.options.vipInterface, ctx.log.child({ sub: 'vip' }))
        : null
  }

  start(): void {
    this.#unsubscribe = this.#ctx.store.subscribe((s) => this.apply(s))
  }

  apply(snapshot: Snapshot): void {
    if (this.#closing) return
    this.#latest = snapshot
    this.#pending = snapshot
    this.#running ??= this.#drain()
  }

  /** One transaction at a time; Snapshots that arrive meanwhile collapse into the newest. */
  async #drain(): Promise<void> {
    try {
      while (this.#pending && !this.#closing) {
        const s = this.#pending
        this.#pending = null
        await this.#sync(s)
      }
    } finally {
      this.#running = null
    }
  }

  async #sync(snapshot: Snapshot): Promise<void> {
    const started = performance.now()
    const opts = this.#ctx.options
    this.#pools = poolUsage(snapshot)
    const advertisedPools = new Set(this.#pools.filter((p) => p.advertised).map((p) => p.pool))
    const next = desiredState(snapshot, {
      nodeName: opts.nodeName,
      nodeAddress: opts.nodeAddress,
      vipMode: opts.vipMode,
      advertisedPools,
    })
    const full = this.#programmed === null
    const { script, removedUdp } = transaction(this.#programmed ?? EMPTY_STATE, next)
    // `add` then `delete` in one transaction: replaces a stale table left by a crash, and is not an error without one.
    const text = full ? `add table ${TABLE}\ndelete table ${TABLE}\n${baseTable()}${script}` : script
    await this.#ensureRouteLocalnet(next)
    if (text !== '') {
      try {
        await this.#nft(text)
        this.#metrics.transactions.inc({ result: 'ok' })
      } catch (err) {
        this.#metrics.transactions.inc({ result: 'error' })
        const msg = new LbError('MLT_LB_NFT', `nft transaction failed: ${(err as Error).message}`, { cause: err })
        if (this.#lastError !== msg.message) this.#log.error({ err: msg, full, version: snapshot.version }, msg.message)
        this.#lastError = msg.message
        this.#programmed = null
        this.#scheduleRetry()
        return
      }
    }
    if (this.#lastError !== null) this.#log.info({ version: snapshot.version }, 'nft table programmed again')
    this.#lastError = null
    this.#programmed = next
    this.#appliedVersion = snapshot.version
    const seconds = (performance.now() - started) / 1000
    this.#lastSync = { version: snapshot.version, seconds, changed: text !== '' }
    this.#log.debug({ version: snapshot.version, full, seconds, bytes: text.length }, 'nft table synced')
    // UDP has no connection to end: without this, a flow keeps going to the endpoint that left (kube-proxy's
    // conntrack -D). TCP entries are left alone: the kernel and the endpoint end those connections themselves.
    await Promise.all([...removedUdp.values()].map((ep) => this.#forgetUdp(ep.ip, ep.port)))
    this.#applyInterface(snapshot, next)
    this.#applyHealthChecks(snapshot)
  }

  /** One transaction through the long-running `nft -i` (lb/nft-shell.ts): no process start per Snapshot. */
  #nft(text: string): Promise<void> {
    return this.#shell.run(text)
  }

  #scheduleRetry(): void {
    if (this.#retry || this.#closing) return
    this.#retry = setTimeout(() => {
      this.#retry = null
      if (this.#latest) this.apply(this.#latest)
    }, RETRY_MS)
    this.#retry.unref()
  }

  async #forgetUdp(ip: string, port: number): Promise<void> {
    try {
      // Exit 1 is "0 flow entries have been deleted".
      const r = await runChild(['conntrack', '-D', '-p', 'udp', '--dst-nat', ip, '--reply-port-src', String(port)], {
        timeoutMs: CONNTRACK_TIMEOUT_MS,
      })
      if (r.code !== 0 && r.code !== 1) this.#log.warn({ ip, port, stderr: r.stderr.trim() }, 'conntrack -D failed')
      else this.#log.debug({ ip, port, output: r.stderr.trim() }, 'UDP flows of a removed endpoint deleted')
    } catch (err) {
      this.#log.warn({ ip, port, err: (err as Error).message }, 'conntrack -D could not run')
    }
  }

  /**
   * A 127/8 Service address DNATed to an endpoint off loopback leaves with a 127/8 source, which the kernel drops as
   * martian unless route_localnet is set (nat-postrouting then masquerades it). Set once, logged, never unset:
   * kube-proxy's iptables mode does the same for localhost NodePorts.
   */
  async #ensureRouteLocalnet(state: NftState): Promise<void> {
    if (this.#routeLocalnet !== null) return
    const loopbackVip = [...(state.elements.get('service-ips')?.keys() ?? [])].some((k) => k.startsWith('127.'))
    if (!loopbackVip) return
    try {
      const was = (await readFile(ROUTE_LOCALNET, 'utf8')).trim()
      if (was !== '1') {
        await writeFile(ROUTE_LOCALNET, '1')
        this.#log.info({ sysctl: 'net.ipv4.conf.all.route_localnet', was }, 'set route_localnet=1 for 127/8 Services')
      }
      this.#routeLocalnet = '1'
    } catch (err) {
      this.#routeLocalnet = `not set: ${(err as Error).message}`
      this.#log.warn(
        { err: (err as Error).message },
        'route_localnet not set: 127/8 Service addresses reach local endpoints only',
      )
    }
  }

  #applyInterface(snapshot: Snapshot, state: NftState): void {
    if (!this.#vip) return
    // The address stays on the interface so the kernel answers ARP for it; the table does the rest.
    const wanted = interfaceAddresses(snapshot, state)
    for (const ip of wanted) void this.#vip.ensure(ip)
    for (const ip of this.#vip.addresses()) if (!wanted.has(ip)) void this.#vip.release(ip)
  }

  #applyHealthChecks(snapshot: Snapshot): void {
    const want = new Map<string, { svc: ServiceState; port: number }>()
    for (const svc of snapshot.services) {
      const spec = svc.service.spec
      if (svc.healthCheckNodePort === null || spec.type !== 'LoadBalancer' || spec.externalTrafficPolicy !== 'Local')
        continue
      want.set(svc.key, { svc, port: svc.healthCheckNodePort })
    }
    reconcileHealthChecks(this.#healthChecks, want, {
      node: this.#ctx.options.nodeName,
      address: this.#ctx.options.nodeAddress ?? '0.0.0.0',
      log: this.#log,
    })
  }

  /** Named counters → the per-Service metrics; one `nft -j` run per scrape at most every second. */
  #readCounters(): Promise<void> {
    const now = Date.now()
    if (this.#counterRead && now - this.#counterRead.at < COUNTER_CACHE_MS) return this.#counterRead.p
    const p = this.#doReadCounters()
    this.#counterRead = { at: now, p }
    return p
  }

  async #doReadCounters(): Promise<void> {
    const programmed = this.#programmed
    if (!programmed || this.#closing) return
    let json: { nftables?: { counter?: { name: string; packets: number; bytes: number } }[] }
    try {
      const r = await runChecked(['nft', '-j', 'list', 'counters', 'table', ...TABLE.split(' ')], {
        timeoutMs: 2_000,
        maxOutputBytes: 32 * 1024 * 1024,
      })
      json = JSON.parse(r.stdout) as typeof json
    } catch (err) {
      this.#log.debug({ err: (err as Error).message }, 'nft counters not read')
      return
    }
    const packets = new Map<string, number>()
    const bytes = new Map<string, number>()
    for (const item of json.nftables ?? []) {
      const c = item.counter
      const service = c && programmed.counters.get(c.name)
      if (!c || service === undefined) continue
      packets.set(service, (packets.get(service) ?? 0) + c.packets)
      bytes.set(service, (bytes.get(service) ?? 0) + c.bytes)
    }
    // The kernel's counters are the truth: a Service whose counter was recreated starts again (a counter reset).
    this.#metrics.packets.reset()
    this.#metrics.bytes.reset()
    for (const [service, n] of packets) this.#metrics.packets.inc({ service }, n)
    for (const [service, n] of bytes) this.#metrics.bytes.inc({ service }, n)
    await this.#readConntrack(programmed)
  }

  /**
   * Entries per Service from `conntrack -L --dst-nat` (one run per family), matched on the original destination
   * through the same keys as the counter maps. Bounded: past CONNTRACK_MAX_OUTPUT (~40,000 entries) the table is not
   * parsed and the gauge is left out rather than wrong, so a scrape never costs more than a few tens of ms.
   */
  async #readConntrack(programmed: NftState): Promise<void> {
    const byKey = new Map<string, string>()
    for (const map of ['counters-ips', 'counters-ips6', 'counters-nodeports']) {
      for (const [key, counter] of programmed.elements.get(map) ?? []) {
        const service = programmed.counters.get(counter.replaceAll('"', ''))
        if (service !== undefined) byKey.set(key, service)
      }
    }
    const counts = new Map<string, number>()
    for (const family of ['ipv4', 'ipv6']) {
      let r
      try {
        r = await runChild(['conntrack', '-L', '-f', family, '--dst-nat'], {
          timeoutMs: CONNTRACK_TIMEOUT_MS,
          maxOutputBytes: CONNTRACK_MAX_OUTPUT,
        })
      } catch (err) {
        this.#log.debug({ err: (err as Error).message }, 'conntrack -L could not run')
        this.#metrics.conntrack.reset()
        return
      }
      if (r.code !== 0 || r.stdout.length >= CONNTRACK_MAX_OUTPUT) {
        this.#log.debug({ code: r.code, bytes: r.stdout.length }, 'conntrack entries not counted')
        this.#metrics.conntrack.reset()
        return
      }
      for (const line of r.stdout.split('\n')) {
        // `tcp 6 431999 ESTABLISHED src=… dst=ORIG sport=… dport=ORIGPORT src=…`: the first dst/dport are the original.
        const m = /^(tcp|udp)\s.*?\bdst=(\S+) .*?\bdport=(\d+)/.exec(line)
        if (!m) continue
        const service = byKey.get(`${m[2]} . ${m[1]} . ${m[3]}`) ?? byKey.get(`${m[1]} . ${m[3]}`)
        if (service !== undefined) counts.set(service, (counts.get(service) ?? 0) + 1)
      }
    }
    this.#metrics.conntrack.reset()
    for (const [service, n] of counts) this.#metrics.conntrack.set({ service }, n)
  }

  ready(): boolean {
    return this.unready().length === 0
  }

  unready(): string[] {
    if (!this.#latest) return ['no snapshot applied yet']
    if (this.#lastError !== null) return [`nft table ${TABLE}: ${this.#lastError}`]
    if (this.#appliedVersion < 0) return [`nft table ${TABLE}: first transaction in progress`]
    return []
  }

  status(): unknown {
    const services: Record<string, unknown> = {}
    for (const [key, programs] of this.#programmed?.services ?? []) services[key] = programs
    return {
      l4Mode: 'nftables',
      l4ModeReason: this.#reason,
      table: TABLE,
      vipMode: this.#ctx.options.vipMode,
      interfaceAddresses: this.#vip?.addresses() ?? null,
      routeLocalnet: this.#routeLocalnet,
      appliedVersion: this.#appliedVersion,
      lastSync: this.#lastSync,
      error: this.#lastError,
      chains: this.#programmed?.chains.size ?? 0,
      services,
      healthCheckNodePorts: [...this.#healthChecks.entries()].map(([service, hc]) => ({
        service,
        port: hc.port,
        localEndpoints: hc.state.localEndpoints,
        ...(hc.error ? { error: hc.error } : {}),
      })),
      pools: this.#pools,
      nftShell: { pid: this.#shell.pid, started: this.#shell.starts },
    }
  }

  async close(): Promise<void> {
    this.#closing = true
    this.#unsubscribe()
    if (this.#retry) clearTimeout(this.#retry)
    await this.#running
    // Established flows keep their conntrack NAT only while the table exists; meshlet stopping ends the service.
    const drop = `add table ${TABLE}\ndelete table ${TABLE}\n`
    try {
      await this.#nft(drop).catch(async (err: Error) => {
        // nft -i gone (killed with the rest of a process tree): one `nft` of its own does it.
        this.#log.debug({ err: err.message }, 'nft -i unavailable at stop; running nft once')
        await runChecked(['nft', drop.trim().replace('\n', '; ')], { timeoutMs: NFT_TIMEOUT_MS })
      })
      this.#log.info({ table: TABLE }, 'nft table deleted')
    } catch (err) {
      this.#log.warn({ table: TABLE, err: (err as Error).message }, 'nft table not deleted')
    }
    await Promise.all([...this.#healthChecks.values()].map((h) => h.close()))
    await this.#vip?.releaseAll()
    await this.#shell.close()
  }
}

function nftMetrics(registry: Registry, read: () => Promise<void>): NftMetrics {
  const registers = [registry]
  return {
    packets: new Counter({
      name: 'meshlet_lb_nft_packets_total',
      help: 'Packets of DNATed flows per Service, both directions (nftables mode, read from the kernel at scrape)',
      labelNames: ['service'] as const,
      registers,
      collect: read,
    }),
    bytes: new Counter({
      name: 'meshlet_lb_nft_bytes_total',
      help: 'Bytes of DNATed flows per Service, both directions (nftables mode, read from the kernel at scrape)',
      labelNames: ['service'] as const,
      registers,
      collect: read,
    }),
    conntrack: new Gauge({
      name: 'meshlet_lb_nft_conntrack_entries',
      help: 'conntrack entries DNATed to each Service (nftables mode, read with conntrack -L at scrape)',
      labelNames: ['service'] as const,
      registers,
      collect: read,
    }),
    transactions: new Counter({
      name: 'meshlet_lb_nft_transactions_total',
      help: 'nft transactions on the meshlet table by result (ok, error)',
      labelNames: ['result'] as const,
      registers,
    }),
  }
}
