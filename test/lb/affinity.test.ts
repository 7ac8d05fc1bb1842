// sessionAffinity: ClientIP's timed table (specs/l4-health.md §3.3) with an injected clock: the sliding window is
// refreshed by each new connection and an entry expires at exactly timeoutSeconds after its last use. The table takes
// `now` from its caller, so this is the arithmetic alone; balance.test.ts checks the wiring through `meshlet up`.

import t from 'tap'
import { AffinityTable } from '../../lb/session-affinity.ts'
import type { EndpointState } from '../../model/snapshot.ts'

function endpoint(ip: string, port = 8080): EndpointState {
  return {
    ip,
    port,
    ready: true,
    serving: true,
    terminating: false,
    nodeName: null,
    zone: null,
    hostname: null,
    pod: null,
    forNodes: null,
    forZones: null,
  }
}

const a = endpoint('10.0.0.1')
const b = endpoint('10.0.0.2')
const list = [a, b]

t.test('each lookup refreshes the window; an idle entry expires at exactly the timeout', async (t) => {
  const table = new AffinityTable(2)
  table.remember('c', a, 0)
  // A connection every 1.9 s keeps a 2 s entry alive for far longer than 2 s.
  for (let now = 1900; now <= 19_000; now += 1900) t.equal(table.lookup('c', list, now), a, `sticky at ${now} ms`)
  const last = 19_000
  t.equal(table.lookup('c', list, last + 1999), a, 'still there 1 ms before the timeout')
  t.equal(table.lookup('c', list, last + 1999 + 2000), null, 'gone when idle for the whole timeout')
  t.equal(table.size, 0, 'the expired entry is removed on lookup')
})

t.test('sweep removes exactly the entries idle for the timeout', async (t) => {
  const table = new AffinityTable(2)
  table.remember('old', a, 0)
  table.remember('new', b, 500)
  table.sweep(1999)
  t.equal(table.size, 2, 'nothing is idle for 2 s yet')
  table.sweep(2000)
  t.equal(table.size, 1, 'the entry idle for exactly 2 s is swept')
  t.equal(table.lookup('new', list, 2000), b, 'the younger one stays')
})

t.test('a changed timeout applies to entries already in the table', async (t) => {
  const table = new AffinityTable(10)
  table.remember('c', a, 0)
  table.timeoutMs = 1000
  t.equal(table.lookup('c', list, 1000), null, 'the new 1 s timeout expires it')
})

t.test('an entry whose endpoint left the list is not used', async (t) => {
  const table = new AffinityTable(2)
  table.remember('c', a, 0)
  t.equal(table.lookup('c', [b], 100), null)
  table.retain(new Set(['10.0.0.2|8080']))
  t.equal(table.size, 0, 'retain drops entries for endpoints no longer usable')
})
