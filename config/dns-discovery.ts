// Replicas discovered through DNS: a provider beside the file provider. For every Deployment carrying
// `meshlet.io/replicas-from-dns: NAME` (model/validate-deployment.ts), NAME is resolved (A and AAAA) through a resolver
// — by default the nameservers of /etc/resolv.conf, which inside a Compose container is Docker's embedded DNS at
// 127.0.0.11, answering a service name with the address of every replica — every `intervalSeconds` and on demand.
// Each address becomes a Pod made from the Deployment's template:
//
//   Deployment default/web  ──resolve "web"──►  198.18.0.5, 198.18.0.6  ──►  Pod default/web-198-18-0-5
//     template: labels, containers (ports, probes), nodeName              Pod default/web-198-18-0-6
//
// The Pods enter the Store with the manifests' objects, so Services select them by label, health/ probes them, and
// DNS, L4 and L7 use them like any other Pod. A Pod is the same object for as long as its address and the Deployment
// are unchanged, so health/ keeps its probe state across re-resolutions and reloads.
//
// Failures keep the last good state: a resolution that times out (or SERVFAILs, or is refused) keeps the addresses
// of that family and is reported in status(); only an answer (NXDOMAIN, or no records) empties a family. No container
// of a Compose service running means Docker answers NXDOMAIN: the Deployment then has no Pods.

import { Resolver } from 'node:dns/promises'
import type { Logger } from 'pino'
import { Counter, Gauge, type Registry } from 'prom-client'
import ipaddr from 'ipaddr.js'
import type { Deployment, KubeObject, Pod } from '../model/objects.ts'
import { objectKey } from '../model/objects.ts'
import type { ObjectError, Snapshot } from '../model/snapshot.ts'
import type { Store } from '../model/store.ts'

export interface DnsDiscoveryOptions {
  /** "host:port" or "[v6]:port" each (--discovery-resolver); empty: the nameservers of /etc/resolv.conf. */
  readonly resolvers: readonly string[]
  /** --node: the nodeName of Pods whose template names none. */
  readonly nodeName: string
  readonly log: Logger
  /** Called (synchronously) whenever the set of Pods changes; read it with pods(). */
  readonly onChange: () => void
  /** Per query attempt, ms. Default 2000 (two attempts). */
  readonly timeoutMs?: number
  /** On-demand refreshes of one Deployment are at least this far apart, ms. Default 1000. */
  readonly minRefreshGapMs?: number
  /** Registers meshlet_discovery_* metrics when given. */
  readonly metrics?: Registry
}

export interface DiscoveryTargetStatus {
  /** "namespace/name" of the Deployment. */
  readonly deployment: string
  readonly dnsName: string
  readonly intervalSeconds: number
  /** Current replica addresses, sorted. */
  readonly addresses: readonly string[]
  /** Names of the Pods made from them. */
  readonly pods: readonly string[]
  /** ISO time of the last finished resolution; null before the first. */
  readonly resolvedAt: string | null
  /** ISO time the address set last changed. */
  readonly changedAt: string | null
  readonly resolutions: number
  readonly failures: number
  /** Why the last resolution failed (one family or both); null when it succeeded. */
  readonly lastError: string | null
}

export interface DiscoveryStatus {
  /** The resolvers in use ("host:port"). */
  readonly resolvers: readonly string[]
  readonly deployments: readonly DiscoveryTargetStatus[]
}

type Family = 4 | 6

interface Target {
  readonly key: string
  deployment: Deployment
  fingerprint: string
  /** Last answer per family; null: not resolved yet (or failed every time so far). */
  addresses: Record<Family, string[] | null>
  /** ip → Pod, reused while the address and the template stay. */
  pods: Map<string, Pod>
  timer: NodeJS.Timeout | null
  inflight: Promise<void> | null
  /** The name changed while a resolution was in flight: resolve again as soon as it ends. */
  again: boolean
  /** A coalesced on-demand refresh waiting for the minimum gap. */
  pending: Promise<void> | null
  startedAt: number
  resolvedAt: number | null
  changedAt: number | null
  resolutions: number
  failures: number
  lastError: string | null
  removed: boolean
}

/** Errors that are an answer ("no such name", "no records of this type"), not a failure to get one. */
const NEGATIVE = new Set(['ENOTFOUND', 'ENODATA'])

/** The Pod name for one replica: `<deployment>-<address with '.' and ':' as '-'>` (IPv6 written in full). */
export function replicaPodName(deployment: string, ip: string): string {
  const addr = ipaddr.parse(ip)
  const text = addr.kind() === 'ipv6' ? (addr as ipaddr.IPv6).toNormalizedString() : addr.toString()
  return `${deployment}-${text.replace(/[.:]/g, '-')}`
}

/** One Pod per replica address, from the Deployment's template. */
export function replicaPod(d: Deployment, ip: string, nodeName: string): Pod {
  const t = d.spec.template
  return {
    kind: 'Pod',
    meta: {
      name: replicaPodName(d.meta.name, ip),
      namespace: d.meta.namespace,
      labels: t.labels,
      annotations: {
        ...t.annotations,
        'meshlet.io/deployment': d.meta.name,
        'meshlet.io/replicas-from-dns': d.discovery.dnsName,
      },
      deletionTimestamp: null,
      source: d.meta.source,
    },
    spec: {
      nodeName: t.spec.nodeName ?? nodeName,
      hostname: t.spec.hostname,
      subdomain: t.spec.subdomain,
      containers: t.spec.containers,
    },
    status: { podIP: ip, podIPs: [ip] },
  }
}

function fingerprintOf(d: Deployment): string {
  // Everything Pods are made from; the source position is left out so moving a Deployment in its file keeps its Pods.
  return JSON.stringify([d.meta.namespace, d.meta.name, d.spec.template, d.discovery])
}

function compareIp(a: string, b: string): number {
  const fa = a.includes(':') ? 6 : 4
  const fb = b.includes(':') ? 6 : 4
  if (fa !== fb) return fa - fb
  const ba = ipaddr.parse(a).toByteArray()
  const bb = ipaddr.parse(b).toByteArray()
  for (let i = 0; i < ba.length; i++) if (ba[i] !== bb[i]) return ba[i]! - bb[i]!
  return 0
}

export class DnsDiscovery {
  readonly #resolver: Resolver
  readonly #nodeName: string
  readonly #log: Logger
  readonly #onChange: () => void
  readonly #minGap: number
  readonly #targets = new Map<string, Target>()
  readonly #metrics: { resolutions: Counter<'result'>; replicas: Gauge<'deployment'> } | null
  #pods: Pod[] = []
  #closed = false

  constructor(options: DnsDiscoveryOptions) {
    this.#resolver = new Resolver({ timeout: options.timeoutMs ?? 2000, tries: 2 })
    if (options.resolvers.length > 0) this.#resolver.setServers([...options.resolvers])
    this.#nodeName = options.nodeName
    this.#log = options.log
    this.#onChange = options.onChange
    this.#minGap = options.minRefreshGapMs ?? 1000
    this.#metrics = options.metrics
      ? {
          resolutions: new Counter({
            name: 'meshlet_discovery_resolutions_total',
            help: 'DNS resolutions of replica names, by result (ok, partial: one address family failed, failed)',
            labelNames: ['result'],
            registers: [options.metrics],
          }),
          replicas: new Gauge({
            name: 'meshlet_discovery_replicas',
            help: 'Replica addresses currently known per Deployment',
            labelNames: ['deployment'],
            registers: [options.metrics],
          }),
        }
      : null
  }

  /**
   * The objects of one load (Deployments are picked out; the rest is ignored). New Deployments are resolved at once;
   * the promise settles when those first resolutions are done (callers need not wait: onChange reports the Pods).
   */
  update(objects: readonly KubeObject[]): Promise<void> {
    if (this.#closed) return Promise.resolve()
    const seen = new Set<string>()
    const first: Promise<void>[] = []
    let changed = false
    for (const o of objects) {
      if (o.kind !== 'Deployment') continue
      const key = objectKey(o.meta)
      seen.add(key)
      const t = this.#targets.get(key)
      if (t === undefined) {
        const target: Target = {
          key,
          deployment: o,
          fingerprint: fingerprintOf(o),
          addresses: { 4: null, 6: null },
          pods: new Map(),
          timer: null,
          inflight: null,
          again: false,
          pending: null,
          startedAt: 0,
          resolvedAt: null,
          changedAt: null,
          resolutions: 0,
          failures: 0,
          lastError: null,
          removed: false,
        }
        this.#targets.set(key, target)
        this.#log.info(
          { deployment: key, dnsName: o.discovery.dnsName, intervalSeconds: o.discovery.intervalSeconds },
          'discovering replicas',
        )
        first.push(this.#resolve(target))
        continue
      }
      if (t.deployment === o) continue
      const fp = fingerprintOf(o)
      const old = t.deployment
      t.deployment = o
      if (fp === t.fingerprint) continue
      t.fingerprint = fp
      if (old.discovery.dnsName !== o.discovery.dnsName) {
        // Another name: the old answers say nothing about it.
        t.addresses = { 4: null, 6: null }
        t.pods = new Map()
        changed = true
        this.#log.info({ deployment: key, dnsName: o.discovery.dnsName }, 'replica name changed; resolving')
        if (t.inflight) t.again = true
        first.push(t.inflight ? t.inflight.then(() => this.#resolve(t)) : this.#resolve(t))
        continue
      }
      // Same name, new template (labels, ports, probes): the same addresses get new Pods.
      const pods = new Map<string, Pod>()
      for (const ip of t.pods.keys()) pods.set(ip, replicaPod(o, ip, this.#nodeName))
      t.pods = pods
      changed = true
      if (old.discovery.intervalSeconds !== o.discovery.intervalSeconds && t.inflight === null) this.#schedule(t)
    }
    for (const [key, t] of this.#targets) {
      if (seen.has(key)) continue
      this.#stop(t)
      this.#targets.delete(key)
      this.#metrics?.replicas.remove({ deployment: key })
      if (t.pods.size > 0) changed = true
      this.#log.info({ deployment: key }, 'Deployment removed; its replicas are gone')
    }
    if (changed) this.#changed()
    return Promise.all(first).then(() => undefined)
  }

  /** Every replica Pod, Deployments in key order, addresses sorted. The same array until the next change. */
  pods(): Pod[] {
    return this.#pods
  }

  /**
   * Resolves again now (all Deployments, or the one with this "namespace/name" key): when a replica stops answering,
   * its address may be gone from DNS. Joins a resolution in flight; calls closer than minRefreshGapMs are coalesced.
   */
  refresh(key?: string): Promise<void> {
    if (this.#closed) return Promise.resolve()
    const list =
      key === undefined ? [...this.#targets.values()] : [this.#targets.get(key)].filter((t) => t !== undefined)
    return Promise.all(list.map((t) => this.#kick(t))).then(() => undefined)
  }

  status(): DiscoveryStatus {
    const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString())
    return {
      resolvers: this.#resolver.getServers(),
      deployments: [...this.#targets.values()].map((t) => ({
        deployment: t.key,
        dnsName: t.deployment.discovery.dnsName,
        intervalSeconds: t.deployment.discovery.intervalSeconds,
        addresses: [...t.pods.keys()],
        pods: [...t.pods.values()].map((p) => p.meta.name),
        resolvedAt: iso(t.resolvedAt),
        changedAt: iso(t.changedAt),
        resolutions: t.resolutions,
        failures: t.failures,
        lastError: t.lastError,
      })),
    }
  }

  close(): void {
    if (this.#closed) return
    this.#closed = true
    for (const t of this.#targets.values()) this.#stop(t)
    this.#resolver.cancel()
  }

  // ------------------------------------------------------------------ internals

  #stop(t: Target): void {
    t.removed = true
    if (t.timer) clearTimeout(t.timer)
    t.timer = null
  }

  #schedule(t: Target): void {
    if (t.timer) clearTimeout(t.timer)
    if (this.#closed || t.removed) return
    t.timer = setTimeout(() => {
      t.timer = null
      this.#resolve(t).catch((err: unknown) => this.#log.error({ err, deployment: t.key }, 'replica resolution failed'))
    }, t.deployment.discovery.intervalSeconds * 1000)
    t.timer.unref()
  }

  #kick(t: Target): Promise<void> {
    if (t.inflight) return t.inflight
    if (t.pending) return t.pending
    const wait = t.startedAt + this.#minGap - Date.now()
    if (wait <= 0) return this.#resolve(t)
    t.pending = new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        t.pending = null
        this.#resolve(t).then(resolve, resolve)
      }, wait)
      timer.unref()
    })
    return t.pending
  }

  #resolve(t: Target): Promise<void> {
    if (this.#closed || t.removed) return Promise.resolve()
    if (t.inflight) return t.inflight
    if (t.timer) clearTimeout(t.timer)
    t.timer = null
    t.startedAt = Date.now()
    t.again = false
    t.inflight = this.#resolveOnce(t).finally(() => {
      t.inflight = null
      if (t.again && !this.#closed && !t.removed)
        this.#resolve(t).catch((err: unknown) =>
          this.#log.error({ err, deployment: t.key }, 'replica resolution failed (re-run after a change)'),
        )
      else this.#schedule(t)
    })
    return t.inflight
  }

  async #query(name: string, family: Family): Promise<{ addresses: string[] } | { error: string }> {
    try {
      const list = family === 4 ? await this.#resolver.resolve4(name) : await this.#resolver.resolve6(name)
      return { addresses: list.map((a) => ipaddr.parse(a).toString()) }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'ERROR'
      if (NEGATIVE.has(code)) return { addresses: [] }
      return { error: `${family === 4 ? 'A' : 'AAAA'} ${name}: ${code}` }
    }
  }

  async #resolveOnce(t: Target): Promise<void> {
    const d = t.deployment
    const name = d.discovery.dnsName
    const [r4, r6] = await Promise.all([this.#query(name, 4), this.#query(name, 6)])
    if (this.#closed || t.removed || t.deployment.discovery.dnsName !== name) return
    t.resolutions++
    t.resolvedAt = Date.now()
    const errors: string[] = []
    for (const [family, r] of [
      [4, r4],
      [6, r6],
    ] as const) {
      if ('error' in r) errors.push(r.error)
      else t.addresses[family] = r.addresses
    }
    const both = errors.length === 2
    if (errors.length > 0) t.failures++
    const lastError = errors.length === 0 ? null : errors.join('; ')
    if (lastError !== t.lastError) {
      if (lastError !== null)
        this.#log.warn(
          { deployment: t.key, dnsName: name },
          `cannot resolve replicas (${lastError}); keeping the last known addresses`,
        )
      else if (t.lastError !== null)
        this.#log.info({ deployment: t.key, dnsName: name }, 'replica resolution works again')
      t.lastError = lastError
    }
    this.#metrics?.resolutions.inc({ result: both ? 'failed' : errors.length > 0 ? 'partial' : 'ok' })
    if (both) return

    const next = [...new Set([...(t.addresses[4] ?? []), ...(t.addresses[6] ?? [])])].sort(compareIp)
    const prev = [...t.pods.keys()]
    if (next.length === prev.length && next.every((ip, i) => ip === prev[i])) return
    const pods = new Map<string, Pod>()
    for (const ip of next) pods.set(ip, t.pods.get(ip) ?? replicaPod(d, ip, this.#nodeName))
    const added = next.filter((ip) => !t.pods.has(ip))
    const removed = prev.filter((ip) => !pods.has(ip))
    t.pods = pods
    t.changedAt = Date.now()
    this.#metrics?.replicas.set({ deployment: t.key }, next.length)
    this.#log.info({ deployment: t.key, dnsName: name, replicas: next.length, added, removed }, 'replicas changed')
    this.#changed()
  }

  #changed(): void {
    const keys = [...this.#targets.keys()].sort()
    this.#pods = keys.flatMap((k) => [...this.#targets.get(k)!.pods.values()])
    if (!this.#closed) this.#onChange()
  }
}

export interface DiscoveryFeedOptions {
  readonly store: Store
  readonly resolvers: readonly string[]
  readonly nodeName: string
  readonly log: Logger
  readonly metrics?: Registry
}

/**
 * The wiring between the file provider, discovery and the Store, for bin/meshlet.ts:
 *
 *   const discovery = startDiscovery({ store, resolvers: options.discoveryResolvers, nodeName: options.nodeName,
 *                                      log: log.child({ component: 'discovery' }), metrics })
 *   new ManifestSource(files, { ..., onUpdate: (objects, errors) => discovery.setObjects(objects, errors) })
 *
 * The Store gets the manifests' objects plus the replica Pods, again whenever the replicas change. A replica Pod
 * that turns unready triggers an on-demand resolution of its Deployment (its container may be gone from DNS).
 */
export interface DiscoveryFeed {
  readonly discovery: DnsDiscovery
  /** What ManifestSource's onUpdate passes. */
  setObjects(objects: readonly KubeObject[], errors: readonly ObjectError[]): void
  status(): DiscoveryStatus
  close(): void
}

export function startDiscovery(options: DiscoveryFeedOptions): DiscoveryFeed {
  const { store } = options
  let objects: readonly KubeObject[] = []
  let errors: readonly ObjectError[] = []
  let loaded = false
  const publish = () => {
    if (!loaded) return
    const pods = discovery.pods()
    store.setObjects(pods.length === 0 ? objects : [...objects, ...pods], errors)
  }
  const discovery = new DnsDiscovery({
    resolvers: options.resolvers,
    nodeName: options.nodeName,
    log: options.log,
    onChange: publish,
    ...(options.metrics ? { metrics: options.metrics } : {}),
  })
  // Readiness of replica Pods as last seen: true → false is the moment to ask DNS whether the replica still exists.
  const wasReady = new Map<string, boolean>()
  const unsubscribe = store.subscribe((s: Snapshot) => {
    const seen = new Set<string>()
    for (const ps of s.pods) {
      if (ps.pod.meta.annotations['meshlet.io/deployment'] === undefined) continue
      seen.add(ps.key)
      const before = wasReady.get(ps.key)
      wasReady.set(ps.key, ps.ready)
      if (before === true && !ps.ready) {
        const d = `${ps.pod.meta.namespace}/${ps.pod.meta.annotations['meshlet.io/deployment']}`
        discovery
          .refresh(d)
          .catch((err: unknown) =>
            options.log.error({ err, deployment: d }, 'replica re-resolution after a readiness drop failed'),
          )
      }
    }
    for (const k of wasReady.keys()) if (!seen.has(k)) wasReady.delete(k)
  })
  return {
    discovery,
    setObjects(o, e) {
      objects = o
      errors = e
      loaded = true
      discovery.update(o).catch((err: unknown) => options.log.error({ err }, 'replica discovery failed'))
      publish()
    },
    status: () => discovery.status(),
    close() {
      unsubscribe()
      discovery.close()
    },
  }
}
