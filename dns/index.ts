// The DNS plane: cluster DNS for the --cluster-domain zone from each Snapshot, and a caching forwarder for every
// other name, on UDP and TCP (specs/dns.md). Wiring only: zone index in zone.ts, answers in answer.ts (UDP fast path
// in fast.ts), listener in server.ts, upstreams and cache in forwarder.ts and cache.ts.
//
// --dns-workers N ≥ 2: the listeners run in N worker threads (workers.ts, worker.ts) sharing the address with
// SO_REUSEPORT, each with its own zone index from every Snapshot. The forwarder and its cache stay here, one for the
// process: the loop probe must be recognised whichever worker it comes back to, the cache is not split N ways, and
// upstream state, metrics and /status have one owner. Workers hand forwarded names and ExternalName chases over with
// the whole query and send the reply they get back. The main thread keeps a zone too (chases of in-zone targets).
// What the cache holds is mirrored into each UDP-serving thread's fast path (dns/fast-cache.ts): here with one
// thread, in every worker (broadcast on each store) with several, so cache hits never cross a thread.

import { networkInterfaces } from 'node:os'
import { Counter, Gauge, Histogram } from 'prom-client'
import { publishApplied, publishListener } from '../model/diagnostics.ts'
import type { Plane, PlaneFactory } from '../model/plane.ts'
import { COUNTED_TYPES, RCODE_SLOTS, Resolver } from './answer.ts'
import { Query, parseQuery } from './wire.ts'
import { EMPTY_SNAPSHOT } from './empty.ts'
import { DnsWorkers } from './workers.ts'
import { ZoneIndex, buildZone, type ZoneOptions } from './zone.ts'
import { DnsListener } from './server.ts'
import { Forwarder, defaultUpstreams } from './forwarder.ts'
import { DnsError } from './errors.ts'
import { RecursionAcl, nodeNetworks } from './recursion-acl.ts'

const RCODE_NAMES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED']

/** The address ns.dns.<zone> answers: the listen address, or this host's first address for a wildcard. */
function serverAddresses(host: string): string[] {
  if (host !== '0.0.0.0' && host !== '::') return [host]
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (!a.internal && a.family === (host === '::' ? 'IPv6' : 'IPv4')) return [a.address]
  }
  return [host === '::' ? '::1' : '127.0.0.1']
}

export const startDns: PlaneFactory = async (ctx) => {
  const { options, log } = ctx
  const listen = options.dns
  if (!listen) throw new DnsError('MLT_DNS_LISTEN', 'dns: no listen address (--dns off)')
  const zoneOptions: ZoneOptions = {
    zone: options.clusterDomain.replace(/\.$/, '').toLowerCase(),
    ttl: options.dnsTtl,
    pods: 'verified',
    serverAddresses: serverAddresses(listen.host),
  }
  const workerCount = options.dnsWorkers
  // With workers the main thread never serves UDP itself: no fast-path index here.
  const resolver = new Resolver(buildZone(EMPTY_SNAPSHOT, zoneOptions, 0), { fast: workerCount <= 1 })
  const allowRecursion = options.allowRecursion
  resolver.acl = new RecursionAcl(allowRecursion)
  let listener: DnsListener | null = null
  let workers: DnsWorkers | null = null
  let address: string
  let port: number
  const failed = (err: Error): never => {
    publishListener('dns', 'dns', listen.host, listen.port, err)
    throw err
  }
  if (workerCount <= 1) {
    listener = new DnsListener(resolver, log)
    await listener.listen(listen.host, listen.port).catch(failed)
    address = listener.address
    port = listener.port
  } else {
    const q = new Query()
    workers = await DnsWorkers.start(
      workerCount,
      listen.host,
      listen.port,
      zoneOptions,
      log,
      (msg, tcp, client) => {
        parseQuery(msg, msg.length, q)
        return resolver.resolve(msg, q, tcp, client)
      },
      (keys) => resolver.forwarder?.cache.touch(keys),
      allowRecursion.map((c) => c.text),
    ).catch(failed)
    address = listen.host
    port = workers.port
  }
  log.info({ listener: 'dns', address, port, transport: 'udp+tcp', workers: workerCount }, 'listening')
  publishListener('dns', 'dns', address, port, null)
  // Once, so a REFUSED answer can be traced to the rule (the node's networks are re-read later as they change).
  log.info(
    { nodeNetworks: nodeNetworks().map((c) => c.text), allowRecursion: allowRecursion.map((c) => c.text) },
    'recursion allowed for loopback, the node networks and --allow-recursion; other clients get REFUSED',
  )

  let fastHitsReported = 0
  const metrics = {
    cacheHits: new Counter({
      name: 'meshlet_dns_cache_hits_total',
      help: 'Forwarded names answered from the cache',
      registers: [ctx.metrics],
      // Hits on the fast paths are counted in plain arrays (shared ones in workers) and added at scrape time.
      collect() {
        const total = (resolver.cache?.hits[0] ?? 0) + (workers?.cacheHits ?? 0)
        if (total > fastHitsReported) this.inc(total - fastHitsReported)
        fastHitsReported = total
      },
    }),
    cacheMisses: new Counter({
      name: 'meshlet_dns_cache_misses_total',
      help: 'Forwarded names not in the cache',
      registers: [ctx.metrics],
    }),
    upstreamLatency: new Histogram({
      name: 'meshlet_dns_upstream_duration_seconds',
      help: 'Time an upstream took to answer, by upstream',
      labelNames: ['upstream'] as const,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [ctx.metrics],
    }),
    upstreamFailures: new Counter({
      name: 'meshlet_dns_upstream_failures_total',
      help: 'Upstream attempts without a usable answer, by upstream and reason',
      labelNames: ['upstream', 'reason'] as const,
      registers: [ctx.metrics],
    }),
  }
  // Queries are counted in a plain array on the hot path and handed to prom-client at scrape time.
  const reported = new Float64Array(resolver.counts.length)
  new Counter({
    name: 'meshlet_dns_queries_total',
    help: 'Queries answered, by query type and response code',
    labelNames: ['type', 'rcode'] as const,
    registers: [ctx.metrics],
    collect() {
      const c = resolver.counts
      const others = workers?.counts ?? []
      for (let i = 0; i < c.length; i++) {
        let total = c[i]!
        for (const w of others) total += w[i]!
        const delta = total - reported[i]!
        if (delta <= 0) continue
        reported[i] = total
        const rcode = i % RCODE_SLOTS
        this.inc(
          {
            type: COUNTED_TYPES[Math.floor(i / RCODE_SLOTS)]!,
            rcode: RCODE_NAMES[rcode] ?? (rcode === 16 ? 'BADVERS' : String(rcode)),
          },
          delta,
        )
      }
    },
  })

  const upstreams = options.upstreams.length > 0 ? options.upstreams : defaultUpstreams()
  const forwarder = new Forwarder(upstreams, { host: address, port }, log.child({ sub: 'forwarder' }), metrics)
  const mirror = resolver.cache
  forwarder.cache.listener = {
    stored: (key, e) => {
      mirror?.put(key, e.buf, e.storedAt, e.expires)
      workers?.cacheStored(key, e.buf, e.storedAt, e.expires)
    },
    removed: (key) => {
      mirror?.delete(key)
      workers?.cacheRemoved(key)
    },
    cleared: () => {
      mirror?.clear()
      workers?.cacheRemoved(null)
    },
    // This thread's fast-path hits count for the LRU order before anything is evicted (workers report each second).
    beforeEvict: () => {
      if (mirror) forwarder.cache.touch(mirror.takeTouched())
    },
  }
  await forwarder.start()
  resolver.forwarder = forwarder
  if (forwarder.usable === 0) log.warn({ upstreams }, 'no usable upstream: names outside the zone get SERVFAIL')

  new Gauge({
    name: 'meshlet_dns_cache_entries',
    help: 'Forwarded replies in the cache',
    registers: [ctx.metrics],
    collect() {
      this.set(forwarder.cache.size)
    },
  })
  new Gauge({
    name: 'meshlet_dns_names',
    help: 'Names in the zone that hold records',
    registers: [ctx.metrics],
    collect() {
      this.set(resolver.zone.recordNames)
    },
  })

  let lastError: string | null = null
  let version = 0
  // Updated in place from each Snapshot: only changed Services, Pods and namespaces are re-derived (issue 14).
  let index = new ZoneIndex(zoneOptions)
  let first = true
  const unsubscribe = ctx.store.subscribe((snapshot) => {
    const started = performance.now()
    try {
      const { zone, changed } = index.apply(snapshot, resolver.zone.serial)
      resolver.setZone(zone, first ? null : changed)
      first = false
      version = snapshot.version
      workers?.post(snapshot)
      if (lastError !== null) log.info('zone rebuilt')
      lastError = null
      publishApplied('dns', snapshot.version, started)
    } catch (err) {
      // What was applied before the failure keeps serving; the next Snapshot rebuilds from a fresh index.
      index = new ZoneIndex(zoneOptions)
      first = true
      lastError = (err as Error).message
      log.error({ err }, 'zone rebuild failed; serving the previous zone')
    }
  })

  const plane: Plane = {
    name: 'dns',
    ready: () => resolver.loaded && (workers === null || workers.ready),
    status: () => ({
      listeners: [{ listener: 'dns', address, port, transports: ['udp', 'tcp'] }],
      zone: zoneOptions.zone,
      ttl: zoneOptions.ttl,
      loaded: resolver.loaded && (workers === null || workers.ready),
      // With workers: the oldest Snapshot a worker serves.
      snapshotVersion: workers === null ? version : Math.min(version, workers.appliedVersion),
      serial: resolver.zone.serial,
      names: resolver.zone.recordNames,
      tcpConnections: listener?.connections ?? workers!.connections,
      workers: workers?.status() ?? null,
      upstreams: forwarder.upstreams.map((u) => ({
        address: u.text,
        state: u.state,
        // dns/errors.ts: why the upstream is not used (or used last), for /status readers to branch on.
        code:
          u.state === 'failing'
            ? 'MLT_DNS_UPSTREAM_FAILED'
            : u.state === 'loop' || u.state === 'self'
              ? 'MLT_DNS_UPSTREAM_LOOP'
              : null,
        failures: u.failures,
        reason: u.reason,
      })),
      // fastHits: cached forwards answered on the fast paths (this thread's and the workers').
      cache: { size: forwarder.cache.size, fastHits: (resolver.cache?.hits[0] ?? 0) + (workers?.cacheHits ?? 0) },
      error: lastError,
    }),
    close: async (deadline) => {
      unsubscribe()
      await listener?.close(deadline)
      // Workers still waiting for forwarded answers get them until they are gone.
      await workers?.close(deadline)
      forwarder.close()
    },
  }
  return plane
}
