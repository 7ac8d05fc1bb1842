// The L4 balancer plane: from each Snapshot, the set of listeners every Service port needs (ClusterIPs, NodePorts,
// LoadBalancer and external IPs; TCP and UDP), each open exactly while its endpoint list is non-empty. Listeners and
// per-port state (round-robin cursor, affinity table) are reused across Snapshots, so a reload touches only what
// changed and established connections keep running.

import type { Logger } from 'pino'
import { publishApplied, publishListener } from '../model/diagnostics.ts'
import type { Plane, PlaneContext } from '../model/plane.ts'
import type { ServicePortState, ServiceState, Snapshot } from '../model/snapshot.ts'
import { reconcileHealthChecks, type HealthCheckServer } from './health-check-server.ts'
import { electedNode } from './l2-election.ts'
import { lbMetrics, type LbMetrics } from './lb-metrics.ts'
import { PortRuntime, portKey, type ListenerKind } from './port-runtime.ts'
import { type BaseListener, TcpListener, type ListenerDeps } from './tcp-listener.ts'
import { UdpListener } from './udp-listener.ts'
import { VipInterface } from './vip-interface.ts'
import { pendingCode, poolUsage, type PoolUsage } from './pool-usage.ts'
import { LbError } from './errors.ts'
import { NftPlane, nftUnavailable } from './nft.ts'

interface DesiredListener {
  readonly protocol: 'TCP' | 'UDP'
  readonly address: string
  readonly port: number
  readonly kind: ListenerKind
  readonly runtime: PortRuntime
  /** In interface mode, the address must be on the interface first. */
  readonly vip: boolean
}

const SWEEP_MS = 1000

interface Conflict {
  readonly listener: string
  readonly service: string
  readonly reason: string
}

export class LbPlane implements Plane {
  readonly name = 'lb'
  readonly #ctx: PlaneContext
  readonly #log: Logger
  readonly #metrics: LbMetrics
  readonly #runtimes = new Map<string, PortRuntime>()
  readonly #listeners = new Map<string, BaseListener>()
  readonly #healthChecks = new Map<string, HealthCheckServer>()
  readonly #vip: VipInterface | null
  readonly #deps: ListenerDeps
  /** Service key → the pending reason last logged, so exhaustion is warned once per change. */
  readonly #pendingLogged = new Map<string, string>()
  /** Listeners whose address is being added to --vip-interface (not ready until it is there and bound). */
  readonly #vipPending = new Set<string>()
  /** Listener id → the error last logged. */
  readonly #errorsLogged = new Map<string, string>()
  #conflicts: Conflict[] = []
  #pools: PoolUsage[] = []
  #advertised = new Set<string>()
  #snapshot: Snapshot | null = null
  /** The listeners wanted by the last apply, by id. */
  #desired = new Map<string, DesiredListener>()
  /** Per Service key: the ServiceState applied last, its listener ids and port runtime keys. */
  readonly #bySvc = new Map<string, { svc: ServiceState; ids: string[]; runtimes: string[] }>()
  #unsubscribe: () => void = () => {}
  #sweep: NodeJS.Timeout
  #closing = false
  /** Why --l4-mode resolved to userspace (shown in /status). */
  readonly #modeReason: string

  constructor(ctx: PlaneContext, modeReason = '--l4-mode userspace') {
    this.#ctx = ctx
    this.#modeReason = modeReason
    this.#log = ctx.log
    this.#metrics = lbMetrics(ctx.metrics)
    this.#vip =
      ctx.options.vipMode === 'interface' && ctx.options.vipInterface
        ? new VipInterface(ctx.options.vipInterface, ctx.log.child({ sub: 'vip' }))
        : null
    this.#deps = {
      metrics: this.#metrics,
      reporter: ctx.reporter,
      onState: (l) => this.#onListenerState(l),
    }
    this.#sweep = setInterval(() => this.#sweepAll(), SWEEP_MS)
    this.#sweep.unref()
  }

  start(): void {
    this.#unsubscribe = this.#ctx.store.subscribe((s) => {
      const started = performance.now()
      this.apply(s)
      publishApplied('lb', s.version, started)
    })
  }

  ready(): boolean {
    return this.unready().length === 0
  }

  /**
   * Not ready while a wanted listener is opening, waits for its address on the interface, or is in error: a
   * Service address that cannot be bound (or added to --vip-interface) is a failing readiness, not only a log line.
   */
  unready(): string[] {
    if (!this.#snapshot) return ['no snapshot applied yet']
    const out: string[] = []
    for (const l of this.#listeners.values()) {
      const what = `listener ${l.protocol} ${l.address}:${l.port} (${l.runtime.svc.key})`
      if (l.state === 'error') out.push(`${what}: ${l.error ?? 'error'}`)
      else if (l.state === 'opening') out.push(`${what}: opening`)
      else if (this.#vipPending.has(l.id)) out.push(`${what}: adding ${l.address} to ${this.#ctx.options.vipInterface}`)
    }
    return out
  }

  apply(snapshot: Snapshot): void {
    if (this.#closing) return
    const previous = this.#snapshot
    this.#snapshot = snapshot
    if (previous && this.#applyChanged(previous, snapshot)) return
    this.#applyAll(snapshot)
  }

  /** Listeners, runtimes and health check a Service wants (runtimes are made or updated on the way). */
  #wanted(
    snapshot: Snapshot,
    svc: ServiceState,
    node: string,
    zone: string | null,
  ): { listeners: [string, DesiredListener][]; runtimes: string[]; health: number | null } {
    const spec = svc.service.spec
    const listeners: [string, DesiredListener][] = []
    const runtimes: string[] = []
    if (spec.type !== 'ExternalName' && !svc.headless) {
      for (const port of svc.ports) {
        if (port.protocol === 'SCTP') continue
        const key = portKey(svc, port)
        let rt = this.#runtimes.get(key)
        if (!rt) this.#runtimes.set(key, (rt = new PortRuntime(key, svc, port, this.#deps.metrics)))
        rt.update(svc, port, node, zone)
        runtimes.push(key)
        for (const d of this.#listenersOf(snapshot, svc, port.protocol, port.port, port.nodePort, rt))
          listeners.push([`${d.protocol}|${d.address}|${d.port}`, d])
      }
    }
    const health =
      svc.healthCheckNodePort !== null && spec.type === 'LoadBalancer' && spec.externalTrafficPolicy === 'Local'
        ? svc.healthCheckNodePort
        : null
    return { listeners, runtimes, health }
  }

  #applyAll(snapshot: Snapshot): void {
    const node = this.#ctx.options.nodeName
    const zone = snapshot.nodes.find((n) => n.meta.name === node)?.zone ?? null
    const desired = new Map<string, DesiredListener>()
    const liveRuntimes = new Set<string>()
    const conflicts: Conflict[] = []
    const wantHealth = new Map<string, { svc: ServiceState; port: number }>()
    this.#pools = poolUsage(snapshot)
    // MetalLB allocates from a pool no L2Advertisement covers but never announces its addresses (§5.1).
    this.#advertised = new Set(this.#pools.filter((p) => p.advertised).map((p) => p.pool))
    this.#bySvc.clear()

    for (const svc of snapshot.services) {
      const want = this.#wanted(snapshot, svc, node, zone)
      for (const key of want.runtimes) liveRuntimes.add(key)
      const ids: string[] = []
      for (const [id, d] of want.listeners) {
        const other = desired.get(id)
        if (other) {
          conflicts.push({
            listener: id,
            service: svc.key,
            reason: `${d.address}:${d.port}/${d.protocol} is already used by ${other.runtime.svc.key}`,
          })
          continue
        }
        desired.set(id, d)
        ids.push(id)
      }
      this.#bySvc.set(svc.key, { svc, ids, runtimes: want.runtimes })
      if (want.health !== null) wantHealth.set(svc.key, { svc, port: want.health })
      this.#logPending(svc)
    }
    this.#conflicts = conflicts
    for (const c of conflicts) this.#logOnce(`conflict|${c.listener}|${c.service}`, c.reason, { service: c.service })

    // Close what is no longer wanted, then open or update the rest.
    for (const [id, l] of this.#listeners) {
      if (!desired.has(id)) {
        this.#listeners.delete(id)
        this.#vipPending.delete(id)
        void l.shutdown(Date.now() + 10_000)
      }
    }
    for (const [id, d] of desired) this.#openOrUpdate(id, d)
    for (const key of this.#runtimes.keys()) if (!liveRuntimes.has(key)) this.#runtimes.delete(key)
    this.#desired = desired
    this.#releaseVips(desired)
    this.#applyHealthChecks(wantHealth, node)
    this.#updateGauges()
  }

  /**
   * Issue 14: only the Services the Snapshot names as changed are re-derived, their listeners opened, updated or
   * closed; the rest is not touched. Returns false (the caller then applies everything) when that would not give the
   * same result: a Snapshot that does not follow the last one, a change to Nodes, pools or node liveness, interface
   * mode, address conflicts, or a new listener that another Service already has.
   */
  #applyChanged(previous: Snapshot, snapshot: Snapshot): boolean {
    const ch = snapshot.changes
    if (!ch || ch.other || snapshot.version !== previous.version + 1 || this.#vip !== null) return false
    if (this.#conflicts.length > 0 || !sameRecord(previous.nodeLiveness, snapshot.nodeLiveness)) return false
    if (previous.liveNodes !== snapshot.liveNodes) return false // etcd leases: the election may move
    if (previous.l2Owners !== snapshot.l2Owners) return false // etcd: an address claimed or released
    const node = this.#ctx.options.nodeName
    const zone = snapshot.nodes.find((n) => n.meta.name === node)?.zone ?? null
    const plans: { key: string; svc: ServiceState | undefined }[] = []
    for (const key of ch.services) {
      const svc = findService(snapshot.services, key)
      if (svc && svc.service.spec.type !== 'ExternalName' && !svc.headless) {
        for (const port of svc.ports) {
          for (const id of this.#idsOf(snapshot, svc, port.protocol, port.port, port.nodePort)) {
            // An address another Service holds: which one wins depends on the order of all of them.
            const owner = this.#desired.get(id)?.runtime.svc.key
            if (owner !== undefined && owner !== key) return false
          }
        }
      }
      plans.push({ key, svc })
    }
    const wantHealth = new Map<string, { svc: ServiceState; port: number }>()
    for (const [key, hc] of this.#healthChecks) {
      const held = this.#bySvc.get(key)
      if (held && !ch.services.has(key)) wantHealth.set(key, { svc: held.svc, port: hc.port })
    }
    for (const { key, svc } of plans) {
      const old = this.#bySvc.get(key)
      const want = svc ? this.#wanted(snapshot, svc, node, zone) : { listeners: [], runtimes: [], health: null }
      const mine = new Set(want.listeners.map(([id]) => id))
      for (const id of old?.ids ?? []) {
        if (mine.has(id)) continue
        this.#desired.delete(id)
        const l = this.#listeners.get(id)
        if (l) {
          this.#listeners.delete(id)
          void l.shutdown(Date.now() + 10_000)
        }
      }
      const keep = new Set(want.runtimes)
      for (const rk of old?.runtimes ?? []) if (!keep.has(rk)) this.#runtimes.delete(rk)
      for (const [id, d] of want.listeners) {
        this.#desired.set(id, d)
        this.#openOrUpdate(id, d)
      }
      if (svc) {
        this.#bySvc.set(key, { svc, ids: [...mine], runtimes: want.runtimes })
        if (want.health !== null) wantHealth.set(key, { svc, port: want.health })
        this.#logPending(svc)
      } else {
        this.#bySvc.delete(key)
        this.#pendingLogged.delete(key)
      }
    }
    this.#applyHealthChecks(wantHealth, node)
    this.#updateGauges()
    return true
  }

  #idsOf(
    snapshot: Snapshot,
    svc: ServiceState,
    protocol: ServicePortState['protocol'],
    port: number,
    nodePort: number | null,
  ): string[] {
    if (protocol === 'SCTP') return []
    // Ids only: #listenersOf reads nothing from the runtime but stores it, so a stand-in does.
    const standIn = { svc } as unknown as PortRuntime
    return this.#listenersOf(snapshot, svc, protocol, port, nodePort, standIn).map(
      (d) => `${d.protocol}|${d.address}|${d.port}`,
    )
  }

  #openOrUpdate(id: string, d: DesiredListener): void {
    let l = this.#listeners.get(id)
    if (!l) {
      l =
        d.protocol === 'TCP'
          ? new TcpListener(d.address, d.port, d.kind, d.runtime, this.#deps)
          : new UdpListener(d.address, d.port, d.kind, d.runtime, this.#deps)
      this.#listeners.set(id, l)
    }
    l.runtime = d.runtime
    l.kind = d.kind
    const open = d.runtime.list(d.kind).length > 0
    if (d.vip && this.#vip && open) {
      const listener = l
      this.#vipPending.add(id)
      void this.#vip.ensure(d.address).then((err) => {
        if (this.#listeners.get(id) !== listener) return
        this.#vipPending.delete(id)
        if (err) {
          listener.error = err
          listener.code = 'MLT_LB_VIP_INTERFACE'
          listener.state = 'error'
        } else listener.want(listener.runtime.list(listener.kind).length > 0)
      })
    } else {
      this.#vipPending.delete(id)
      l.want(open)
    }
    if (l instanceof UdpListener) {
      const serving = new Set<string>()
      for (const e of d.runtime.port.endpoints) if (e.serving) serving.add(`${e.ip}|${e.port}`)
      l.retainServing(serving)
    }
  }

  #listenersOf(
    snapshot: Snapshot,
    svc: ServiceState,
    protocol: 'TCP' | 'UDP',
    port: number,
    nodePort: number | null,
    runtime: PortRuntime,
  ): DesiredListener[] {
    const out: DesiredListener[] = []
    const mode = this.#ctx.options.vipMode
    if (mode !== 'none') {
      for (const ip of svc.clusterIPs) out.push({ protocol, address: ip, port, kind: 'cluster', runtime, vip: true })
      for (const ip of svc.service.spec.externalIPs)
        out.push({ protocol, address: ip, port, kind: 'external', runtime, vip: false })
      for (const ip of svc.loadBalancerIPs) {
        // In interface mode only the elected node may own the address, or several would answer ARP for it.
        if (mode === 'interface' && electedNode(snapshot, svc, ip) !== snapshot.nodeName) continue
        if (mode === 'interface' && svc.loadBalancerPool !== null && !this.#advertised.has(svc.loadBalancerPool))
          continue
        out.push({ protocol, address: ip, port, kind: 'external', runtime, vip: true })
      }
    }
    if (nodePort !== null) {
      out.push({
        protocol,
        address: this.#ctx.options.nodeAddress ?? '0.0.0.0',
        port: nodePort,
        kind: 'external',
        runtime,
        vip: false,
      })
    }
    return out
  }

  #releaseVips(desired: ReadonlyMap<string, DesiredListener>): void {
    if (!this.#vip) return
    const wanted = new Set<string>()
    for (const d of desired.values()) if (d.vip) wanted.add(d.address)
    for (const ip of this.#vip.addresses()) if (!wanted.has(ip)) void this.#vip.release(ip)
  }

  #applyHealthChecks(want: ReadonlyMap<string, { svc: ServiceState; port: number }>, node: string): void {
    reconcileHealthChecks(this.#healthChecks, want, {
      node,
      address: this.#ctx.options.nodeAddress ?? '0.0.0.0',
      log: this.#log,
    })
  }

  #logPending(svc: ServiceState): void {
    const reason = svc.loadBalancerPending
    const last = this.#pendingLogged.get(svc.key)
    if (reason === null) {
      if (last !== undefined) {
        this.#pendingLogged.delete(svc.key)
        this.#log.info(
          { service: svc.key, ips: svc.loadBalancerIPs, pool: svc.loadBalancerPool },
          'LoadBalancer address assigned',
        )
      }
      return
    }
    if (last === reason) return
    this.#pendingLogged.set(svc.key, reason)
    const pools = this.#snapshot ? poolUsage(this.#snapshot) : []
    this.#log.warn(
      {
        service: svc.key,
        code: pendingCode(reason),
        pools: pools.map((p) => ({ pool: p.pool, assigned: p.assigned, capacity: p.capacity })),
      },
      reason,
    )
  }

  #logOnce(key: string, msg: string, fields: Record<string, unknown>): void {
    if (this.#errorsLogged.get(key) === msg) return
    this.#errorsLogged.set(key, msg)
    this.#log.error(fields, msg)
  }

  #onListenerState(l: BaseListener): void {
    const fields = {
      service: l.runtime.svc.key,
      listener: 'lb',
      protocol: l.protocol,
      address: l.address,
      port: l.port,
    }
    if (l.state === 'error' && l.error) {
      this.#logOnce(`listener|${l.id}`, l.error, { ...fields, code: l.code })
      publishListener('lb', l.id, l.address, l.port, new Error(l.error))
    } else if (l.state === 'open') {
      this.#errorsLogged.delete(`listener|${l.id}`)
      publishListener('lb', l.id, l.address, l.port, null)
      this.#log.debug(fields, 'listening')
    } else if (l.state === 'closed') this.#log.debug(fields, 'listener closed')
  }

  #sweepAll(): void {
    const now = Date.now()
    for (const l of this.#listeners.values()) if (l instanceof UdpListener) l.sweep(now)
    for (const rt of this.#runtimes.values()) rt.affinity?.sweep(now)
    this.#updateGauges()
  }

  #updateGauges(): void {
    const m = this.#metrics
    m.affinityEntries.reset()
    for (const rt of this.#runtimes.values())
      if (rt.affinity) m.affinityEntries.inc({ service: rt.svc.key }, rt.affinity.size)
    m.poolAddresses.reset()
    for (const p of this.#pools) {
      m.poolAddresses.set({ pool: p.pool, state: 'assigned' }, p.assigned)
      m.poolAddresses.set({ pool: p.pool, state: 'available' }, p.capacity - p.assigned)
    }
  }

  status(): unknown {
    const services: Record<string, unknown[]> = {}
    for (const rt of this.#runtimes.values()) {
      const list = (services[rt.svc.key] ??= [])
      const listeners = [...this.#listeners.values()]
        .filter((l) => l.runtime === rt)
        .map((l) => ({
          protocol: l.protocol,
          address: l.address,
          port: l.port,
          kind: l.kind,
          state: l.state,
          ...(l.error ? { error: l.error, code: l.code } : {}),
          ...(l instanceof TcpListener ? { connections: l.connections } : {}),
          ...(l.refused > 0
            ? {
                refused: {
                  code: 'MLT_LB_NO_UPSTREAM',
                  count: l.refused,
                  last: new Date(l.refusedAt).toISOString(),
                },
              }
            : {}),
          ...(l instanceof UdpListener ? { flows: l.flows } : {}),
        }))
      list.push({
        port: rt.port.name || rt.port.port,
        protocol: rt.port.protocol,
        usable: { cluster: rt.lists.cluster.length, local: rt.lists.local.length },
        affinityEntries: rt.affinity?.size ?? null,
        listeners,
      })
    }
    return {
      l4Mode: 'userspace',
      l4ModeReason: this.#modeReason,
      vipMode: this.#ctx.options.vipMode,
      interfaceAddresses: this.#vip?.addresses() ?? null,
      services,
      conflicts: this.#conflicts,
      healthCheckNodePorts: [...this.#healthChecks.entries()].map(([service, hc]) => ({
        service,
        port: hc.port,
        localEndpoints: hc.state.localEndpoints,
        ...(hc.error ? { error: hc.error } : {}),
      })),
      pools: this.#pools,
    }
  }

  async close(deadline: number): Promise<void> {
    this.#closing = true
    this.#unsubscribe()
    clearInterval(this.#sweep)
    await Promise.all([...this.#listeners.values()].map((l) => l.shutdown(deadline)))
    this.#listeners.clear()
    await Promise.all([...this.#healthChecks.values()].map((h) => h.close()))
    await this.#vip?.releaseAll()
  }
}

function sameRecord(a: Readonly<Record<string, boolean>>, b: Readonly<Record<string, boolean>>): boolean {
  const ka = Object.keys(a)
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k])
}

/** Snapshot.services is sorted by key. */
function findService(list: readonly ServiceState[], key: string): ServiceState | undefined {
  let lo = 0
  let hi = list.length - 1
  while (lo <= hi) {
    const mid = (lo + hi) >> 1
    const k = list[mid]!.key
    if (k === key) return list[mid]
    if (k < key) lo = mid + 1
    else hi = mid - 1
  }
  return undefined
}

/**
 * --l4-mode: nftables when asked (an error when `nft` cannot work here), userspace when asked, and for auto
 * nftables exactly when `nft` can program a table in this network namespace (root or CAP_NET_ADMIN, nft installed).
 */
export async function chooseL4Mode(
  mode: 'userspace' | 'nftables' | 'auto',
): Promise<{ mode: 'userspace' | 'nftables'; reason: string }> {
  if (mode === 'userspace') return { mode, reason: '--l4-mode userspace' }
  const why = await nftUnavailable()
  if (mode === 'nftables') {
    if (why !== null) throw new LbError('MLT_LB_NFT', `--l4-mode nftables: nft cannot run here: ${why}`)
    return { mode, reason: '--l4-mode nftables' }
  }
  return why === null
    ? { mode: 'nftables', reason: '--l4-mode auto: nft works in this network namespace' }
    : { mode: 'userspace', reason: `--l4-mode auto: nft unusable (${why})` }
}

export async function startLb(ctx: PlaneContext): Promise<Plane> {
  const choice = await chooseL4Mode(ctx.options.l4Mode)
  ctx.log.info({ l4Mode: choice.mode, reason: choice.reason }, `L4 data plane: ${choice.mode}`)
  const plane = choice.mode === 'nftables' ? new NftPlane(ctx, choice.reason) : new LbPlane(ctx, choice.reason)
  plane.start()
  return plane
}
