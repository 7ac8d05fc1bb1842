// --l4-mode nftables, the rule set: from a Snapshot, the contents of meshlet's one table (`inet meshlet`) in the
// layout of kube-proxy's nftables proxier (kubernetes/kubernetes pkg/proxy/nftables), and the transaction that turns
// one such state into the next by touching only what differs (kube-proxy's partial sync). Pure: no I/O here.
//
// Layout (kube-proxy's names where it has one):
//   service-ips / service-ips6     (address . protocol . port) → goto the Service port's chain (verdict map)
//   service-nodeports              (protocol . port) → goto …, for NodePorts when --node-address is not set
//   no-endpoint-*                  the same keys → goto reject-chain, for Service ports without usable endpoints
//   svc-…                          per Service port and family: masquerade mark, affinity lookups, `numgen random
//                                  mod N vmap { i : goto ep-… }`; ext-… is the external one when policies differ
//   ep-…                           per endpoint: hairpin masquerade mark, affinity `update`, `dnat to ip:port`
//   aff-…                          per endpoint with ClientIP affinity: dynamic set of client addresses whose
//                                  element timeout is the Service's timeoutSeconds
//   cnt-…                          a named counter per Service, fed from a postrouting filter chain through
//                                  counters-* maps keyed by the conntrack original tuple, so both directions count

import { createHash } from 'node:crypto'
import { isIPv6 } from 'node:net'
import type { EndpointState, ServicePortState, ServiceState, Snapshot } from '../model/snapshot.ts'
import { electedNode } from './l2-election.ts'
import { listFor, usableLists } from './usable-endpoints.ts'

export const TABLE = 'inet meshlet'
/** The packet mark bit asking nat-postrouting to masquerade (kube-proxy's 0x4000). */
const MASQ_MARK = '0x4000'

type Family = 4 | 6

/** A rule set as data: what the table holds besides the fixed base chains and maps. */
export interface NftState {
  /** Chain name → its rules, in order. */
  readonly chains: ReadonlyMap<string, readonly string[]>
  /** Set name → its definition (type, flags, timeout). */
  readonly sets: ReadonlyMap<string, string>
  /** Named counters (per Service) → the Service key. */
  readonly counters: ReadonlyMap<string, string>
  /** Map name → element key → element value. */
  readonly elements: ReadonlyMap<string, ReadonlyMap<string, string>>
  /** UDP endpoint chains → what conntrack entries to delete when the chain goes. */
  readonly udpEndpoints: ReadonlyMap<string, { readonly ip: string; readonly port: number }>
  /** Per Service key: the chains and address keys programmed (for /status). */
  readonly services: ReadonlyMap<string, ServiceProgram[]>
}

export interface ServiceProgram {
  readonly port: string | number
  readonly protocol: 'TCP' | 'UDP'
  readonly endpoints: { readonly cluster: number; readonly external: number }
  readonly affinityTimeoutSeconds: number | null
  readonly addresses: readonly {
    readonly address: string
    readonly port: number
    readonly kind: 'cluster' | 'external'
    /** 'open': DNATed to endpoints; 'reject': no usable endpoint, new connections are refused. */
    readonly state: 'open' | 'reject'
  }[]
}

export const EMPTY_STATE: NftState = {
  chains: new Map(),
  sets: new Map(),
  counters: new Map(),
  elements: new Map(),
  udpEndpoints: new Map(),
  services: new Map(),
}

export interface RulesOptions {
  readonly nodeName: string
  readonly nodeAddress: string | null
  readonly vipMode: 'loopback' | 'interface' | 'none'
  /** Pools with an L2Advertisement (interface mode announces only those). */
  readonly advertisedPools: ReadonlySet<string>
}

/** The fixed part: maps, hook chains, reject and masquerade. Written whole when the table is (re)created. */
export function baseTable(): string {
  const masq = `meta mark & ${MASQ_MARK} == ${MASQ_MARK} meta mark set meta mark ^ ${MASQ_MARK} masquerade fully-random`
  const count = (proto: string) =>
    [
      `meta l4proto ${proto} ct status dnat counter name ct original ip daddr . meta l4proto . ct original proto-dst map @counters-ips`,
      `meta l4proto ${proto} ct status dnat counter name ct original ip6 daddr . meta l4proto . ct original proto-dst map @counters-ips6`,
      `meta l4proto ${proto} ct status dnat counter name meta l4proto . ct original proto-dst map @counters-nodeports`,
    ].join('\n    ')
  return `table ${TABLE} {
  map service-ips { type ipv4_addr . inet_proto . inet_service : verdict; }
  map service-ips6 { type ipv6_addr . inet_proto . inet_service : verdict; }
  map service-nodeports { type inet_proto . inet_service : verdict; }
  map no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict; }
  map no-endpoint-services6 { type ipv6_addr . inet_proto . inet_service : verdict; }
  map no-endpoint-nodeports { type inet_proto . inet_service : verdict; }
  map counters-ips { type ipv4_addr . inet_proto . inet_service : counter; }
  map counters-ips6 { type ipv6_addr . inet_proto . inet_service : counter; }
  map counters-nodeports { type inet_proto . inet_service : counter; }
  chain reject-chain {
    meta l4proto tcp reject with tcp reset
    reject
  }
  chain mark-for-masquerade {
    meta mark set meta mark | ${MASQ_MARK}
  }
  chain services {
    ip daddr . meta l4proto . th dport vmap @service-ips
    ip6 daddr . meta l4proto . th dport vmap @service-ips6
    fib daddr type local meta l4proto . th dport vmap @service-nodeports
  }
  chain nat-prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    jump services
  }
  chain nat-output {
    type nat hook output priority -100; policy accept;
    jump services
  }
  chain nat-postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ${masq}
    ip saddr 127.0.0.0/8 oifname != "lo" ct status dnat masquerade fully-random
  }
  chain no-endpoints {
    ct state new ip daddr . meta l4proto . th dport vmap @no-endpoint-services
    ct state new ip6 daddr . meta l4proto . th dport vmap @no-endpoint-services6
    ct state new fib daddr type local meta l4proto . th dport vmap @no-endpoint-nodeports
  }
  chain filter-input {
    type filter hook input priority -110; policy accept;
    jump no-endpoints
  }
  chain filter-forward {
    type filter hook forward priority -110; policy accept;
    jump no-endpoints
  }
  chain filter-output {
    type filter hook output priority -110; policy accept;
    jump no-endpoints
  }
  chain count {
    type filter hook postrouting priority 0; policy accept;
    ${count('tcp')}
    ${count('udp')}
  }
}
`
}

function hash(s: string): string {
  return createHash('sha256').update(s).digest('base64url').slice(0, 10).replace(/[-_]/g, 'x')
}

/** nft identifiers: letters, digits, / _ . - ; kube-proxy's readable part after a hash, bounded in length. */
function ident(prefix: string, key: string, readable: string): string {
  const clean = readable.replace(/[^A-Za-z0-9/_.-]/g, '.').slice(0, 180)
  return `${prefix}-${hash(key)}-${clean}`
}

const familyOf = (ip: string): Family => (isIPv6(ip) ? 6 : 4)
const ipKw = (f: Family) => (f === 6 ? 'ip6' : 'ip')
const hostPort = (ip: string, port: number) => (isIPv6(ip) ? `[${ip}]:${port}` : `${ip}:${port}`)

interface Builder {
  chains: Map<string, string[]>
  sets: Map<string, string>
  counters: Map<string, string>
  elements: Map<string, Map<string, string>>
  udpEndpoints: Map<string, { ip: string; port: number }>
  services: Map<string, ServiceProgram[]>
}

function element(b: Builder, map: string, key: string, value: string): boolean {
  let m = b.elements.get(map)
  if (!m) b.elements.set(map, (m = new Map()))
  // The first Service to claim an address keeps it (the userspace plane reports such conflicts).
  if (m.has(key)) return false
  m.set(key, value)
  return true
}

/** The whole desired state for a Snapshot. */
export function desiredState(snapshot: Snapshot, opts: RulesOptions): NftState {
  const b: Builder = {
    chains: new Map(),
    sets: new Map(),
    counters: new Map(),
    elements: new Map(),
    udpEndpoints: new Map(),
    services: new Map(),
  }
  const zone = snapshot.nodes.find((n) => n.meta.name === opts.nodeName)?.zone ?? null
  for (const svc of snapshot.services) {
    if (svc.service.spec.type === 'ExternalName' || svc.headless) continue
    const programs: ServiceProgram[] = []
    for (const port of svc.ports) {
      if (port.protocol === 'SCTP') continue
      programs.push(servicePort(b, snapshot, svc, port, zone, opts))
    }
    if (programs.length > 0) b.services.set(svc.key, programs)
  }
  return b
}

function servicePort(
  b: Builder,
  snapshot: Snapshot,
  svc: ServiceState,
  port: ServicePortState,
  zone: string | null,
  opts: RulesOptions,
): ServiceProgram {
  const protocol = port.protocol as 'TCP' | 'UDP'
  const proto = protocol === 'TCP' ? 'tcp' : 'udp'
  const spec = svc.service.spec
  const lists = usableLists(port.endpoints, opts.nodeName, zone)
  const clusterList = listFor(svc, lists, 'cluster')
  const externalList = listFor(svc, lists, 'external')
  const portKey = `${svc.key}|${port.name}|${protocol}|${port.port}`
  const readable = `${svc.namespace}/${svc.name}/${proto}/${port.name || port.port}`
  const affinity = spec.sessionAffinity === 'ClientIP' ? spec.affinityTimeoutSeconds : null
  const counter = ident('cnt', svc.key, `${svc.namespace}/${svc.name}`)
  b.counters.set(counter, svc.key)

  // Endpoint chains, shared by the cluster and the external chain of this Service port.
  const epChain = new Map<string, string>()
  for (const e of [...clusterList, ...externalList]) {
    const id = `${e.ip}|${e.port}`
    if (epChain.has(id)) continue
    const f = familyOf(e.ip)
    const name = ident('ep', `${portKey}|${id}|${affinity}`, `${readable}__${e.ip}/${e.port}`)
    epChain.set(id, name)
    // Hairpin: an endpoint reaching itself through the Service from another host's point of view (a container
    // forwarded through this node) is masqueraded, or it would answer itself directly. A local client whose address
    // is the endpoint's needs nothing: the reply stays on this host (and masquerading on lo breaks it).
    const rules = [`fib saddr type != local ${ipKw(f)} saddr ${e.ip} jump mark-for-masquerade`]
    if (affinity !== null) {
      // The timeout is part of the set's name: a changed timeoutSeconds is a new set, not an altered one.
      const set = ident('aff', `${portKey}|${id}|${affinity}`, `${readable}__${e.ip}/${e.port}`)
      b.sets.set(set, `{ type ${f === 6 ? 'ipv6_addr' : 'ipv4_addr'}; flags dynamic,timeout; timeout ${affinity}s; }`)
      rules.push(`update @${set} { ${ipKw(f)} saddr }`)
    }
    rules.push(`meta l4proto ${proto} dnat ${ipKw(f)} to ${hostPort(e.ip, e.port)}`)
    b.chains.set(name, rules)
    if (protocol === 'UDP') b.udpEndpoints.set(name, { ip: e.ip, port: e.port })
  }

  /** The chain for one list and family, or null when the list has no endpoint of that family. */
  const serviceChain = (
    prefix: 'svc' | 'ext',
    list: readonly EndpointState[],
    f: Family,
    masquerade: boolean,
  ): string | null => {
    const eps = list.filter((e) => familyOf(e.ip) === f)
    if (eps.length === 0) return null
    const name = ident(prefix, `${portKey}|${f}|${affinity}`, `${readable}/v${f}`)
    if (b.chains.has(name)) return name
    // Traffic from another host (not a local source) is masqueraded so the reply comes back through this node,
    // which meshlet is not necessarily the route of (kube-proxy masquerades off-cluster sources the same way).
    const rules = masquerade ? ['fib saddr type != local jump mark-for-masquerade'] : []
    if (affinity !== null) {
      for (const e of eps) {
        const ep = epChain.get(`${e.ip}|${e.port}`)!
        const set = ident('aff', `${portKey}|${e.ip}|${e.port}|${affinity}`, `${readable}__${e.ip}/${e.port}`)
        rules.push(`${ipKw(f)} saddr @${set} goto ${ep}`)
      }
    }
    const vmap = eps.map((e, i) => `${i} : goto ${epChain.get(`${e.ip}|${e.port}`)!}`).join(', ')
    rules.push(`numgen random mod ${eps.length} vmap { ${vmap} }`)
    b.chains.set(name, rules)
    return name
  }

  const addresses: ServiceProgram['addresses'][number][] = []
  const dispatch = (address: string | null, p: number, kind: 'cluster' | 'external') => {
    const list = kind === 'cluster' ? clusterList : externalList
    // Local policy keeps the client's address (the endpoint is on this node); Cluster may go anywhere.
    const policy = kind === 'cluster' ? spec.internalTrafficPolicy : spec.externalTrafficPolicy
    const separate =
      kind === 'external' &&
      (spec.internalTrafficPolicy !== spec.externalTrafficPolicy || spec.externalTrafficPolicy === 'Local')
    const f = address === null ? 4 : familyOf(address)
    const chains = ([4, 6] as const).map((fam) =>
      serviceChain(separate ? 'ext' : 'svc', list, fam, kind === 'cluster' || policy !== 'Local'),
    )
    let ok: boolean
    if (address === null) {
      // NodePort on every local address: one key per protocol and port, IPv4 endpoints first.
      const chain = chains[0] ?? chains[1]
      const key = `${proto} . ${p}`
      ok = chain
        ? element(b, 'service-nodeports', key, `goto ${chain}`)
        : element(b, 'no-endpoint-nodeports', key, 'goto reject-chain')
      if (ok) element(b, 'counters-nodeports', key, `"${counter}"`)
    } else {
      const chain = chains[f === 6 ? 1 : 0]
      const suffix = f === 6 ? '6' : ''
      const key = `${address} . ${proto} . ${p}`
      ok = chain
        ? element(b, `service-ips${suffix}`, key, `goto ${chain}`)
        : element(b, `no-endpoint-services${suffix}`, key, 'goto reject-chain')
      if (ok) element(b, `counters-ips${suffix}`, key, `"${counter}"`)
    }
    const open = address === null ? (chains[0] ?? chains[1]) !== null : chains[f === 6 ? 1 : 0] !== null
    if (ok) addresses.push({ address: address ?? '*', port: p, kind, state: open ? 'open' : 'reject' })
  }

  if (opts.vipMode !== 'none') {
    for (const ip of svc.clusterIPs) dispatch(ip, port.port, 'cluster')
    for (const ip of spec.externalIPs) dispatch(ip, port.port, 'external')
    for (const ip of svc.loadBalancerIPs) {
      // As in the userspace plane: in interface mode only the elected node takes a LoadBalancer address.
      if (opts.vipMode === 'interface' && electedNode(snapshot, svc, ip) !== snapshot.nodeName) continue
      if (
        opts.vipMode === 'interface' &&
        svc.loadBalancerPool !== null &&
        !opts.advertisedPools.has(svc.loadBalancerPool)
      )
        continue
      dispatch(ip, port.port, 'external')
    }
  }
  if (port.nodePort !== null) dispatch(opts.nodeAddress, port.nodePort, 'external')
  return {
    port: port.name || port.port,
    protocol,
    endpoints: { cluster: clusterList.length, external: externalList.length },
    affinityTimeoutSeconds: affinity,
    addresses,
  }
}

/** The addresses interface mode must put on --vip-interface for this state (ClusterIPs and LoadBalancer IPs). */
export function interfaceAddresses(snapshot: Snapshot, state: NftState): Set<string> {
  const out = new Set<string>()
  for (const svc of snapshot.services) {
    const programs = state.services.get(svc.key)
    if (!programs) continue
    const wanted = new Set([...svc.clusterIPs, ...svc.loadBalancerIPs])
    for (const p of programs) for (const a of p.addresses) if (wanted.has(a.address)) out.add(a.address)
  }
  return out
}

/** Everything `next` needs to be created from an empty table (after `baseTable()`). */
export function transaction(prev: NftState, next: NftState): { script: string; removedUdp: NftState['udpEndpoints'] } {
  const out: string[] = []
  // Set names carry what defines them (family, timeout), so a set is only ever added or deleted, never altered.
  for (const [name, def] of next.sets) if (!prev.sets.has(name)) out.push(`add set ${TABLE} ${name} ${def}`)
  for (const name of next.counters.keys()) if (!prev.counters.has(name)) out.push(`add counter ${TABLE} ${name}`)
  for (const name of next.chains.keys()) if (!prev.chains.has(name)) out.push(`add chain ${TABLE} ${name}`)
  // Elements that go or change first, so no map points at a chain that is about to be deleted.
  const addElements: string[] = []
  const maps = new Set([...prev.elements.keys(), ...next.elements.keys()])
  for (const map of maps) {
    const before = prev.elements.get(map) ?? new Map<string, string>()
    const after = next.elements.get(map) ?? new Map<string, string>()
    const gone = [...before].filter(([k, v]) => after.get(k) !== v).map(([k]) => k)
    const added = [...after].filter(([k, v]) => before.get(k) !== v).map(([k, v]) => `${k} : ${v}`)
    if (gone.length > 0) out.push(`delete element ${TABLE} ${map} { ${gone.join(', ')} }`)
    if (added.length > 0) addElements.push(`add element ${TABLE} ${map} { ${added.join(', ')} }`)
  }
  for (const [name, rules] of next.chains) {
    const before = prev.chains.get(name)
    if (before && sameRules(before, rules)) continue
    if (before) out.push(`flush chain ${TABLE} ${name}`)
    for (const r of rules) out.push(`add rule ${TABLE} ${name} ${r}`)
  }
  out.push(...addElements)
  // Chains that go: flushed first (they may jump to each other), then deleted; then the sets they updated.
  const goneChains = [...prev.chains.keys()].filter((n) => !next.chains.has(n))
  for (const name of goneChains) out.push(`flush chain ${TABLE} ${name}`)
  for (const name of goneChains) out.push(`delete chain ${TABLE} ${name}`)
  for (const name of prev.sets.keys()) if (!next.sets.has(name)) out.push(`delete set ${TABLE} ${name}`)
  for (const name of prev.counters.keys()) if (!next.counters.has(name)) out.push(`delete counter ${TABLE} ${name}`)
  // A UDP endpoint that left every Service port (not one whose chain was only renamed) loses its flows.
  const stay = new Set([...next.udpEndpoints.values()].map((e) => `${e.ip}|${e.port}`))
  const removedUdp = new Map<string, { ip: string; port: number }>()
  for (const [name, ep] of prev.udpEndpoints) if (!stay.has(`${ep.ip}|${ep.port}`)) removedUdp.set(name, ep)
  return { script: out.length > 0 ? out.join('\n') + '\n' : '', removedUdp }
}

function sameRules(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((r, i) => r === b[i])
}
