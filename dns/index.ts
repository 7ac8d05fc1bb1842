// The DNS plane: cluster DNS for the --cluster-domain zone from each Snapshot, and a caching forwarder for every
// other name, on UDP and TCP (specs/dns.md). Wiring only: zone index in zone.ts, answers in answer.ts, listener in
// server.ts, upstreams and cache in forwarder.ts and cache.ts.

import { networkInterfaces } from 'node:os'
import { Counter, Gauge, Histogram } from 'prom-client'
import type { Plane, PlaneFactory } from '../model/plane.ts'
import type { Snapshot } from '../model/snapshot.ts'
import { COUNTED_TYPES, RCODE_SLOTS, Resolver } from './answer.ts'
import { buildZone, type ZoneOptions } from './zone.ts'
import { DnsListener } from './server.ts'
import { Forwarder, defaultUpstreams } from './forwarder.ts'
import { DnsError } from './errors.ts'

const RCODE_NAMES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED']

const EMPTY: Snapshot = {
  version: 0,
  builtAt: 0,
  nodeName: '',
  objects: [],
  services: [],
  pods: [],
  nodes: [],
  ingresses: [],
  ingressClasses: [],
  secrets: [],
  pools: [],
  l2Advertisements: [],
  namespaces: [],
  errors: [],
  ejected: {},
}

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
  const resolver = new Resolver(buildZone(EMPTY, zoneOptions, 0))
  const listener = new DnsListener(resolver, log)
  await listener.listen(listen.host, listen.port)
  log.info({ listener: 'dns', address: listener.address, port: listener.port, transport: 'udp+tcp' }, 'listening')

  const metrics = {
    cacheHits: new Counter({ name: 'meshlet_dns_cache_hits_total', help: 'Forwarded names answered from the cache', registers: [ctx.metrics] }),
    cacheMisses: new Counter({ name: 'meshlet_dns_cache_misses_total', help: 'Forwarded names not in the cache', registers: [ctx.metrics] }),
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
      for (let i = 0; i < c.length; i++) {
        const delta = c[i]! - reported[i]!
        if (delta <= 0) continue
        reported[i] = c[i]!
        const rcode = i % RCODE_SLOTS
        this.inc({ type: COUNTED_TYPES[Math.floor(i / RCODE_SLOTS)]!, rcode: RCODE_NAMES[rcode] ?? (rcode === 16 ? 'BADVERS' : String(rcode)) }, delta)
      }
    },
  })

  const upstreams = options.upstreams.length > 0 ? options.upstreams : defaultUpstreams()
  const forwarder = new Forwarder(upstreams, { host: listener.address, port: listener.port }, log.child({ sub: 'forwarder' }), metrics)
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
  const unsubscribe = ctx.store.subscribe((snapshot) => {
    try {
      resolver.setZone(buildZone(snapshot, zoneOptions, resolver.zone.serial))
      version = snapshot.version
      if (lastError !== null) log.info('zone rebuilt')
      lastError = null
    } catch (err) {
      // The previous zone keeps serving.
      lastError = (err as Error).message
      log.error({ err }, 'zone rebuild failed; serving the previous zone')
    }
  })

  const plane: Plane = {
    name: 'dns',
    ready: () => resolver.loaded,
    status: () => ({
      listeners: [{ listener: 'dns', address: listener.address, port: listener.port, transports: ['udp', 'tcp'] }],
      zone: zoneOptions.zone,
      ttl: zoneOptions.ttl,
      loaded: resolver.loaded,
      snapshotVersion: version,
      serial: resolver.zone.serial,
      names: resolver.zone.recordNames,
      tcpConnections: listener.connections,
      upstreams: forwarder.upstreams.map((u) => ({ address: u.text, state: u.state, failures: u.failures, reason: u.reason })),
      cache: { size: forwarder.cache.size },
      error: lastError,
    }),
    close: async (deadline) => {
      unsubscribe()
      await listener.close(deadline)
      forwarder.close()
    },
  }
  return plane
}
