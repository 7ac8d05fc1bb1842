// model/lb-allocator.ts, MetalLB's allocation rules (specs/l4-health.md §5.1-§5.4), on objects loaded from YAML the
// way `meshlet up` loads them: lowest address first (network and broadcast included), ranges, exhaustion text,
// release and retry, stickiness, requested IPs by spec.loadBalancerIP and annotation, address-pool, autoAssign,
// avoidBuggyIPs, priority, and sharing with allow-shared-ip.

import t from 'tap'
import { loadManifestText } from '../../config/load.ts'
import { allocateLoadBalancers, poolCapacity, type LoadBalancerAllocation } from '../../model/lb-allocator.ts'
import type { IPAddressPool, KubeObject, Service } from '../../model/objects.ts'

function load(text: string): { services: Service[]; pools: IPAddressPool[] } {
  const r = loadManifestText(text, 'allocator.test.yaml')
  if (r.errors.length > 0) throw new Error(JSON.stringify(r.errors))
  const objs = r.objects as KubeObject[]
  return {
    services: objs.filter((o): o is Service => o.kind === 'Service'),
    pools: objs.filter((o): o is IPAddressPool => o.kind === 'IPAddressPool'),
  }
}

function pool(name: string, addresses: string[], extra = ''): string {
  return `apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: { name: ${name}, namespace: metallb-system }
spec:
  addresses: [${addresses.map((a) => `"${a}"`).join(', ')}]
${extra}---
`
}

function svc(
  name: string,
  opts: { ports?: string; annotations?: Record<string, string>; spec?: string; ns?: string } = {},
): string {
  const ann = opts.annotations
    ? `\n  annotations: { ${Object.entries(opts.annotations)
        .map(([k, v]) => `"${k}": "${v}"`)
        .join(', ')} }`
    : ''
  return `apiVersion: v1
kind: Service
metadata:
  name: ${name}
  namespace: ${opts.ns ?? 'default'}${ann}
spec:
  type: LoadBalancer
  selector: { app: ${name} }
  ports: ${opts.ports ?? '[{ port: 80 }]'}
${opts.spec ?? ''}---
`
}

const ipsOf = (m: Map<string, LoadBalancerAllocation>) =>
  Object.fromEntries([...m].map(([k, v]) => [k, v.ips.join(',') || v.pending]))

t.test(
  'a pool of 10 (a /29 and a range), 11 Services: lowest first, the 11th pending; release and retry',
  async (t) => {
    const names = Array.from({ length: 11 }, (_, i) => `svc-${String(i + 1).padStart(2, '0')}`)
    const text = pool('ten', ['198.18.5.0/29', '198.18.5.8-198.18.5.9']) + names.map((n) => svc(n)).join('')
    const { services, pools } = load(text)
    t.same(
      poolCapacity(pools[0]!),
      { v4: 10n, v6: 0n },
      'capacity 10: a /29 counts its network and broadcast addresses',
    )
    const first = allocateLoadBalancers(services, pools, null)
    for (let i = 0; i < 10; i++)
      t.same(first.get(`default/${names[i]}`)?.ips, [`198.18.5.${i}`], `${names[i]} gets 198.18.5.${i}`)
    const last = first.get('default/svc-11')!
    t.same(last.ips, [], 'the 11th gets nothing')
    t.equal(last.pending, 'Failed to allocate IP for "default/svc-11": no available IPs', 'MetalLB’s text')

    // Delete svc-03: its address goes to the pending Service; nobody else moves.
    const without3 = services.filter((s) => s.meta.name !== 'svc-03')
    const second = allocateLoadBalancers(without3, pools, first)
    t.same(second.get('default/svc-11')?.ips, ['198.18.5.2'], 'the pending Service gets the freed address')
    for (const n of names.filter((n) => n !== 'svc-03' && n !== 'svc-11')) {
      t.same(second.get(`default/${n}`)?.ips, first.get(`default/${n}`)?.ips, `${n} keeps its address`)
    }
    // Same input again: nothing changes (sticky).
    t.same(ipsOf(allocateLoadBalancers(without3, pools, second)), ipsOf(second), 'stable on reload')
    // A restart (no previous state) with the original manifests gives the original allocation.
    t.same(
      ipsOf(allocateLoadBalancers(services, pools, null)),
      ipsOf(first),
      'deterministic: same manifests, same addresses',
    )
  },
)

t.test('avoidBuggyIPs skips .0 and .255; autoAssign false is used only on request', async (t) => {
  const { services, pools } = load(
    pool('manual', ['198.18.6.0/30'], '  autoAssign: false\n') +
      pool('zz-buggy', ['198.18.7.255-198.18.8.1'], '  avoidBuggyIPs: true\n') +
      svc('a') +
      svc('b') +
      svc('c') +
      svc('d', { annotations: { 'metallb.io/address-pool': 'manual' } }),
  )
  t.same(
    poolCapacity(pools.find((p) => p.meta.name === 'zz-buggy')!),
    { v4: 1n, v6: 0n },
    'only 198.18.8.1 of the three',
  )
  const r = allocateLoadBalancers(services, pools, null)
  t.same(r.get('default/a')?.ips, ['198.18.8.1'], 'a skips .255 and .0 and never uses the autoAssign:false pool')
  t.equal(
    r.get('default/b')?.pending,
    'Failed to allocate IP for "default/b": no available IPs',
    'b: nothing left for automatic allocation',
  )
  t.same(
    r.get('default/d')?.ips,
    ['198.18.6.0'],
    'd names the autoAssign:false pool and gets its first address (.0 allowed)',
  )
  t.equal(r.get('default/d')?.pool, 'manual')
})

t.test('requested addresses: spec.loadBalancerIP, metallb.io/loadBalancerIPs, errors', async (t) => {
  const { services, pools } = load(
    pool('p1', ['198.18.9.0/28']) +
      pool('p2', ['198.18.10.0/28'], '  autoAssign: false\n') +
      svc('auto') +
      svc('by-spec', { spec: '  loadBalancerIP: 198.18.9.7\n' }) +
      svc('by-annotation', { annotations: { 'metallb.io/loadBalancerIPs': '198.18.10.3' } }) +
      svc('by-old-annotation', { annotations: { 'metallb.universe.tf/loadBalancerIPs': '198.18.9.9' } }) +
      svc('both', {
        annotations: { 'metallb.io/loadBalancerIPs': '198.18.9.4' },
        spec: '  loadBalancerIP: 198.18.9.4\n',
      }) +
      svc('outside', { spec: '  loadBalancerIP: 10.9.9.9\n' }) +
      svc('wrong-pool', {
        annotations: { 'metallb.io/loadBalancerIPs': '198.18.9.5', 'metallb.io/address-pool': 'p2' },
      }) +
      svc('unknown-pool', { annotations: { 'metallb.io/address-pool': 'nope' } }) +
      svc('taken', { spec: '  loadBalancerIP: 198.18.9.7\n' }),
  )
  const r = allocateLoadBalancers(services, pools, null)
  t.same(r.get('default/by-spec')?.ips, ['198.18.9.7'], 'spec.loadBalancerIP honoured')
  t.same(
    r.get('default/by-annotation')?.ips,
    ['198.18.10.3'],
    'annotation honoured, even from an autoAssign:false pool',
  )
  t.same(r.get('default/by-old-annotation')?.ips, ['198.18.9.9'], 'the deprecated metallb.universe.tf key works')
  t.same(r.get('default/auto')?.ips, ['198.18.9.0'], 'requests go first; auto takes the lowest free address')
  t.equal(
    r.get('default/both')?.pending,
    'Failed to allocate IP for "default/both": service can not have both metallb.io/loadBalancerIPs and svc.Spec.LoadBalancerIP',
  )
  t.equal(
    r.get('default/outside')?.pending,
    'Failed to allocate IP for "default/outside": ["10.9.9.9"] is not allowed in config',
  )
  t.equal(
    r.get('default/wrong-pool')?.pending,
    'Failed to allocate IP for "default/wrong-pool": requested loadBalancer IP(s) ["198.18.9.5"] is not compatible with requested address pool p2',
  )
  t.equal(
    r.get('default/unknown-pool')?.pending,
    'Failed to allocate IP for "default/unknown-pool": unknown pool "nope"',
  )
  t.match(
    r.get('default/taken')?.pending,
    /^Failed to allocate IP for "default\/taken": /,
    'an address already held by a non-sharing Service is refused',
  )
})

t.test('a requested pool that is full says so', async (t) => {
  const { services, pools } = load(
    pool('one', ['198.18.11.1/32']) +
      svc('a', { annotations: { 'metallb.io/address-pool': 'one' } }) +
      svc('b', { annotations: { 'metallb.io/address-pool': 'one' } }),
  )
  const r = allocateLoadBalancers(services, pools, null)
  t.same(r.get('default/a')?.ips, ['198.18.11.1'])
  t.equal(r.get('default/b')?.pending, 'Failed to allocate IP for "default/b": no available IPs in pool one')
})

t.test('serviceAllocation: pinned pools by priority first, then the others by name', async (t) => {
  const { services, pools } = load(
    pool('a-general', ['198.18.12.0/30']) +
      pool('b-low', ['198.18.13.0/30'], '  serviceAllocation:\n    priority: 20\n    namespaces: [team]\n') +
      pool('c-high', ['198.18.14.0/30'], '  serviceAllocation:\n    priority: 10\n    namespaces: [team]\n') +
      svc('in-team', { ns: 'team' }) +
      svc('elsewhere'),
  )
  const r = allocateLoadBalancers(services, pools, null)
  t.same(r.get('team/in-team')?.ips, ['198.18.14.0'], 'the pinned pool with the lower priority number wins')
  t.same(r.get('default/elsewhere')?.ips, ['198.18.12.0'], 'other namespaces use the unpinned pool')
})

t.test('sharing with allow-shared-ip: disjoint ports share, overlap and Cluster vs Local refused', async (t) => {
  const k = { 'metallb.io/allow-shared-ip': 'key1' }
  const { services, pools } = load(
    pool('p', ['198.18.15.0/31']) +
      svc('dns-tcp', {
        annotations: k,
        ports: '[{ port: 53, protocol: TCP }]',
        spec: '  loadBalancerIP: 198.18.15.0\n',
      }) +
      svc('dns-udp', {
        annotations: k,
        ports: '[{ port: 53, protocol: UDP }]',
        spec: '  loadBalancerIP: 198.18.15.0\n',
      }) +
      svc('dup-port', {
        annotations: k,
        ports: '[{ port: 53, protocol: TCP }]',
        spec: '  loadBalancerIP: 198.18.15.0\n',
      }) +
      svc('other-key', {
        annotations: { 'metallb.io/allow-shared-ip': 'key2' },
        ports: '[{ port: 80 }]',
        spec: '  loadBalancerIP: 198.18.15.0\n',
      }) +
      svc('local', {
        annotations: k,
        ports: '[{ port: 443 }]',
        spec: '  loadBalancerIP: 198.18.15.0\n  externalTrafficPolicy: Local\n',
      }) +
      svc('web', { annotations: k, ports: '[{ port: 8080 }]' }),
  )
  const r = allocateLoadBalancers(services, pools, null)
  t.same(r.get('default/dns-tcp')?.ips, ['198.18.15.0'], 'TCP/53')
  t.same(r.get('default/dns-udp')?.ips, ['198.18.15.0'], 'UDP/53 shares the address')
  t.equal(
    r.get('default/dup-port')?.pending,
    'Failed to allocate IP for "default/dup-port": port TCP/53 is already in use on "198.18.15.0"',
    'TCP/53 twice refused',
  )
  t.match(
    r.get('default/other-key')?.pending,
    /can't change sharing key for "default\/other-key", address also in use by default\/dns-tcp/,
    'another key refused',
  )
  t.match(r.get('default/local')?.pending, /address also in use by/, 'Local may not share with Cluster')
  t.same(
    r.get('default/web')?.ips,
    ['198.18.15.0'],
    'automatic allocation co-locates a compatible Service on the shared address',
  )

  // Two Local Services share only with identical selectors.
  const local = load(
    pool('q', ['198.18.16.0/32']) +
      svc('l1', { annotations: k, ports: '[{ port: 80 }]', spec: '  externalTrafficPolicy: Local\n' }).replace(
        'app: l1',
        'app: same',
      ) +
      svc('l2', { annotations: k, ports: '[{ port: 81 }]', spec: '  externalTrafficPolicy: Local\n' }).replace(
        'app: l2',
        'app: same',
      ) +
      svc('l3', { annotations: k, ports: '[{ port: 82 }]', spec: '  externalTrafficPolicy: Local\n' }),
  )
  const r2 = allocateLoadBalancers(local.services, local.pools, null)
  t.same(r2.get('default/l1')?.ips, ['198.18.16.0'])
  t.same(r2.get('default/l2')?.ips, ['198.18.16.0'], 'same selector: shared')
  t.equal(
    r2.get('default/l3')?.pending,
    'Failed to allocate IP for "default/l3": no available IPs',
    'other selector: no address',
  )
})

t.test('a changed request moves the Service; an unchanged one stays', async (t) => {
  const before = load(pool('p', ['198.18.17.0/29']) + svc('a') + svc('b'))
  const r1 = allocateLoadBalancers(before.services, before.pools, null)
  t.same(r1.get('default/b')?.ips, ['198.18.17.1'])
  const after = load(pool('p', ['198.18.17.0/29']) + svc('a') + svc('b', { spec: '  loadBalancerIP: 198.18.17.5\n' }))
  const r2 = allocateLoadBalancers(after.services, after.pools, r1)
  t.same(r2.get('default/b')?.ips, ['198.18.17.5'], 'new request honoured')
  t.same(r2.get('default/a')?.ips, ['198.18.17.0'], 'a unchanged')
  const other = load(pool('p', ['198.18.17.0/29']) + svc('a') + svc('b') + svc('a-new'))
  const r3 = allocateLoadBalancers(other.services, other.pools, r1)
  t.same(
    r3.get('default/a-new')?.ips,
    ['198.18.17.2'],
    'a new Service never takes an address held by another, even if it sorts first',
  )
})

t.test('loadBalancerClass of another implementation: not ours', async (t) => {
  const { services, pools } = load(
    pool('p', ['198.18.18.0/30']) + svc('x', { spec: '  loadBalancerClass: example.com/other\n' }),
  )
  t.equal(allocateLoadBalancers(services, pools, null).has('default/x'), false, 'no allocation, no error')
})

t.test('removing a pool keeps its live addresses, marked stale, until the Service changes', async (t) => {
  const { services, pools } = load(
    pool('a', ['198.18.6.0/30']) +
      pool('b', ['198.18.7.0/30']) +
      svc('web') +
      svc('api', { annotations: { 'metallb.io/address-pool': 'b' } }),
  )
  const first = allocateLoadBalancers(services, pools, null)
  t.same(first.get('default/api')?.ips, ['198.18.7.0'])
  const withoutB = pools.filter((p) => p.meta.name !== 'b')
  const second = allocateLoadBalancers(services, withoutB, first)
  t.same(second.get('default/api')?.ips, ['198.18.7.0'], 'the live address is not moved')
  t.equal(second.get('default/api')?.stale, true, 'and reported stale')
  t.equal(second.get('default/web')?.stale, false)
  const changed = load(pool('a', ['198.18.6.0/30']) + svc('web') + svc('api')).services
  const third = allocateLoadBalancers(changed, withoutB, second)
  t.same(third.get('default/api')?.ips, ['198.18.6.1'], 'a changed request frees the stale address and allocates anew')
  t.equal(third.get('default/api')?.stale, false)
})
