// Which node announces a LoadBalancer address (specs/l4-health.md §5.6, MetalLB's L2 election, stateless per IP):
// candidates sorted by sha256(nodeName + "#" + ip); the first announces. With externalTrafficPolicy Local only nodes
// with a serving endpoint of the Service are candidates; with no serving endpoint nobody announces.
// Candidates stand in for MetalLB's memberlist: --node (always), plus every declared Node that does not carry the
// exclude label, whose Ready condition is not False, and that membership/ has not seen dead (never probed = alive).
// In etcd mode the candidates are the nodes holding a lease (Snapshot.liveNodes), --node only while it holds its own.
// With recorded claims (Snapshot.l2Owners, etcd mode in interface mode) the rule's choice announces only once its
// claim is in etcd: the previous owner withdraws, then deletes its claim, and only then can the new one claim
// (store/l2-owners.ts), so two running nodes never hold the address at once.

import { createHash } from 'node:crypto'
import type { Snapshot, ServiceState } from '../model/snapshot.ts'

const EXCLUDE_LABEL = 'node.kubernetes.io/exclude-from-external-load-balancers'

export function candidates(snapshot: Snapshot): string[] {
  // etcd mode: the lease holders are the members (MetalLB's memberlist); a declared Node can still exclude itself.
  if (snapshot.liveNodes) {
    const declared = new Map(snapshot.nodes.map((n) => [n.meta.name, n]))
    return snapshot.liveNodes.filter((name) => {
      const n = declared.get(name)
      return !n || (!(EXCLUDE_LABEL in n.meta.labels) && n.ready !== false)
    })
  }
  const names = new Set<string>([snapshot.nodeName])
  for (const n of snapshot.nodes) {
    if (EXCLUDE_LABEL in n.meta.labels) continue
    if (n.meta.name === snapshot.nodeName) continue
    if (n.ready === false) continue
    if (snapshot.nodeLiveness[n.meta.name] === false) continue
    names.add(n.meta.name)
  }
  return [...names]
}

/** The node that announces `ip`: the rule's choice, and with recorded claims only once that node's claim is in. */
export function electedNode(snapshot: Snapshot, svc: ServiceState, ip: string): string | null {
  const wish = preferredNode(snapshot, svc, ip)
  if (!snapshot.l2Owners) return wish
  return wish !== null && snapshot.l2Owners[ip] === wish ? wish : null
}

/** MetalLB's rule alone: who should own `ip` by the current candidates, whatever is recorded. */
export function preferredNode(snapshot: Snapshot, svc: ServiceState, ip: string): string | null {
  const serving = svc.ports.flatMap((p) => p.endpoints).filter((e) => e.serving)
  if (serving.length === 0) return null
  let nodes = candidates(snapshot)
  if (svc.service.spec.externalTrafficPolicy === 'Local') {
    const withEndpoint = new Set(serving.map((e) => e.nodeName).filter((n): n is string => n !== null))
    nodes = nodes.filter((n) => withEndpoint.has(n))
  }
  const score = (n: string) => createHash('sha256').update(`${n}#${ip}`).digest('hex')
  nodes.sort((a, b) => (score(a) < score(b) ? -1 : 1))
  return nodes[0] ?? null
}
