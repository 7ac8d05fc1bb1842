// membership/: which other meshlet nodes are alive — meshlet's small stand-in for MetalLB's memberlist
// (specs/l4-health.md §5.6). A writer, not a router: for every declared Node other than --node that has an InternalIP,
// it probes that node's admin /healthz every second and writes each transition to the Store (`setNodeAlive`);
// lb/l2-election.ts then leaves dead nodes out of the LoadBalancer address election, so the address moves to a
// surviving node when its owner stops. Docs: lb/README.md "Node membership".

import { isIP } from 'node:net'
import { Counter, Gauge } from 'prom-client'
import type { Logger } from 'pino'
import type { Plane, PlaneContext, PlaneFactory } from '../model/plane.ts'
import type { Snapshot } from '../model/snapshot.ts'
import type { Node } from '../model/objects.ts'
import { PeerProber, type PeerTarget } from './peer-prober.ts'

export const ADMIN_PORT_ANNOTATION = 'meshlet.io/admin-port'

/** The peer to probe for a Node, or null when it has no InternalIP (nothing to probe: it stays "alive"). */
export function peerTarget(node: Node, defaultPort: number): { target: PeerTarget | null; warning: string | null } {
  const address = node.addresses.find((a) => a.type === 'InternalIP' && isIP(a.address) !== 0)?.address
  if (!address) return { target: null, warning: null }
  let port = defaultPort
  let warning: string | null = null
  const raw = node.meta.annotations[ADMIN_PORT_ANNOTATION]
  if (raw !== undefined) {
    const n = Number(raw)
    if (/^\d+$/.test(raw.trim()) && n >= 1 && n <= 65535) port = n
    else warning = `${ADMIN_PORT_ANNOTATION}: "${raw}" is not a port (1-65535); using ${defaultPort}`
  }
  return { target: { node: node.meta.name, address, port }, warning }
}

export class MembershipPlane implements Plane {
  readonly name = 'membership'
  readonly #ctx: PlaneContext
  readonly #log: Logger
  readonly #peers = new Map<string, PeerProber>()
  readonly #warned = new Map<string, string>()
  readonly #alive: Gauge<'node'>
  readonly #probes: Counter<'node' | 'result'>
  #unsubscribe: () => void = () => {}
  #applied = false
  #closed = false

  constructor(ctx: PlaneContext) {
    this.#ctx = ctx
    this.#log = ctx.log
    this.#alive = new Gauge({
      name: 'meshlet_membership_peer_alive',
      help: 'Other nodes probed by membership: 1 alive, 0 dead (absent until the first verdict).',
      labelNames: ['node'],
      registers: [ctx.metrics],
    })
    this.#probes = new Counter({
      name: 'meshlet_membership_probes_total',
      help: "Probes of other nodes' admin /healthz, by node and result (success, failure).",
      labelNames: ['node', 'result'],
      registers: [ctx.metrics],
    })
  }

  start(): void {
    this.#unsubscribe = this.#ctx.store.subscribe((s) => this.apply(s))
  }

  apply(snapshot: Snapshot): void {
    if (this.#closed) return
    this.#applied = true
    const self = this.#ctx.options.nodeName
    const defaultPort = this.#ctx.options.peerPort
    const wanted = new Map<string, PeerTarget>()
    for (const node of snapshot.nodes) {
      if (node.meta.name === self) continue
      const { target, warning } = peerTarget(node, defaultPort)
      if (warning !== null && this.#warned.get(node.meta.name) !== warning)
        this.#log.warn({ node: node.meta.name }, warning)
      if (warning !== null) this.#warned.set(node.meta.name, warning)
      else this.#warned.delete(node.meta.name)
      if (target) wanted.set(target.node, target)
    }
    for (const [name, peer] of this.#peers) {
      const want = wanted.get(name)
      if (want && want.address === peer.target.address && want.port === peer.target.port) continue
      // Gone, or a new address or port: forget what was known, so the node counts as alive until probed again.
      peer.stop()
      this.#peers.delete(name)
      this.#alive.remove({ node: name })
      this.#ctx.store.setNodeAlive(name, null)
      if (!want) this.#log.info({ node: name }, 'peer no longer declared: not probed')
    }
    for (const [name, target] of wanted) {
      if (this.#peers.has(name)) continue
      const peer = new PeerProber(target, {
        transition: (p, state, reason) => this.#transition(p, state, reason),
        probed: (p, ok) => this.#probes.inc({ node: p.target.node, result: ok ? 'success' : 'failure' }),
      })
      this.#peers.set(name, peer)
      this.#log.debug({ node: name, url: peer.url }, 'probing peer')
      peer.start()
    }
  }

  #transition(peer: PeerProber, state: 'alive' | 'dead', reason: string): void {
    if (this.#closed || this.#peers.get(peer.target.node) !== peer) return
    this.#alive.set({ node: peer.target.node }, state === 'alive' ? 1 : 0)
    this.#ctx.store.setNodeAlive(peer.target.node, state === 'alive')
    const fields = { node: peer.target.node, url: peer.url, reason }
    this.#log.info(fields, state === 'alive' ? 'peer alive' : 'peer dead: left out of LoadBalancer address election')
  }

  ready(): boolean {
    return this.#applied
  }

  status() {
    return {
      peerPort: this.#ctx.options.peerPort,
      peers: [...this.#peers.values()].map((p) => p.status()),
    }
  }

  async close(): Promise<void> {
    this.#closed = true
    this.#unsubscribe()
    for (const p of this.#peers.values()) p.stop()
    this.#peers.clear()
  }
}

/** What the membership plane shows in /status (the tests read it through this type). */
export type MembershipStatus = ReturnType<MembershipPlane['status']>

export const startMembership: PlaneFactory = async (ctx) => {
  const plane = new MembershipPlane(ctx)
  plane.start()
  return plane
}
