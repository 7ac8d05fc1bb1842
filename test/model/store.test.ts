// The Store: coalesced publication, unchanged verdicts ignored, a failing subscriber isolated.

import t from 'tap'
import { setImmediate as tick } from 'node:timers/promises'
import { loadManifestText } from '../../config/load.ts'
import { Store } from '../../model/store.ts'
import { parseCidr } from '../../model/ip.ts'
import type { Snapshot } from '../../model/snapshot.ts'

const yaml = `
apiVersion: v1
kind: Pod
metadata: { name: p, labels: { app: a } }
spec: { containers: [{ name: c, readinessProbe: { tcpSocket: { port: 80 } } }] }
status: { podIP: 127.0.0.61 }
---
apiVersion: v1
kind: Service
metadata: { name: a }
spec: { selector: { app: a }, ports: [{ port: 80 }] }
`

function newStore(onSubscriberError?: (err: unknown) => void): Store {
  return new Store({
    nodeName: 'n',
    serviceCidrs: [parseCidr('127.96.0.0/16')!],
    ...(onSubscriberError ? { onSubscriberError } : {}),
  })
}

t.test('nothing is published before the first configuration', async (t) => {
  const store = newStore()
  const seen: Snapshot[] = []
  store.subscribe((s) => seen.push(s))
  store.setPodHealth('default/p', { ready: true, started: true, restartCount: 0, reason: null })
  await tick()
  t.equal(seen.length, 0)
  t.equal(store.current, null)
})

t.test('changes in one tick make one Snapshot; unchanged verdicts make none', async (t) => {
  const store = newStore()
  const seen: Snapshot[] = []
  store.subscribe((s) => seen.push(s))
  const { objects } = loadManifestText(yaml, 'x.yaml')
  store.setObjects(objects, [])
  store.setPodHealth('default/p', { ready: true, started: true, restartCount: 0, reason: null })
  store.setEjected('default/a|127.0.0.61|80', 'test')
  store.setEjected('default/a|127.0.0.61|80', null)
  await tick()
  t.equal(seen.length, 1, 'one build for four changes')
  t.equal(seen[0]!.services[0]!.ports[0]!.endpoints[0]!.ready, true)
  store.setPodHealth('default/p', { ready: true, started: true, restartCount: 0, reason: 'again' })
  await tick()
  t.equal(seen.length, 1, 'same verdict: no new Snapshot')
  store.setPodHealth('default/p', { ready: false, started: true, restartCount: 0, reason: 'HTTP 500' })
  await tick()
  t.equal(seen.length, 2)
  t.equal(seen[1]!.services[0]!.ports[0]!.endpoints[0]!.ready, false)
  t.equal(seen[1]!.version, seen[0]!.version + 1)
  const late: Snapshot[] = []
  store.subscribe((s) => late.push(s))
  t.equal(late.length, 1, 'a late subscriber gets the current Snapshot at once')
})

t.test('a subscriber that throws does not stop the others', async (t) => {
  const errors: unknown[] = []
  const store = newStore((e) => errors.push(e))
  let got = 0
  store.subscribe(() => {
    throw new Error('boom')
  })
  store.subscribe(() => got++)
  store.setObjects(loadManifestText(yaml, 'x.yaml').objects, [])
  await tick()
  t.equal(got, 1)
  t.equal(errors.length, 1)
})

t.test('a big build is spread over turns and publishes only whole Snapshots, equal to one built at once', async (t) => {
  // Issue 14: from SLICE_MIN_OBJECTS objects the Store builds in slices of a few milliseconds; what it publishes must
  // be what one synchronous build gives, and changes made meanwhile must reach the next Snapshot.
  const docs = Array.from({ length: 1500 }, (_, i) =>
    JSON.stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name: `s${i}` }, spec: { ports: [{ port: 80 }] } }),
  ).join('\n---\n')
  const { objects } = loadManifestText(docs, 'big.yaml')
  const store = newStore()
  const seen: Snapshot[] = []
  store.subscribe((s) => seen.push(s))
  store.setObjects(objects, [])
  let turns = 0
  while (seen.length === 0 && turns < 100_000) {
    await tick()
    turns++
  }
  t.equal(seen.length, 1, `one Snapshot after ${turns} turn(s)`)
  const whole = newStore()
  whole.setObjects(objects, [])
  t.same(seen[0]!.services, whole.flush()!.services, 'the same Services as a build in one go')

  // A second big build; a verdict arrives while it may still be running, then flush() finishes whatever is pending.
  const { objects: more } = loadManifestText(yaml, 'x.yaml')
  store.setObjects([...objects, ...more], [])
  await tick()
  store.setPodHealth('default/p', { ready: true, started: true, restartCount: 0, reason: null })
  const last = store.flush()!
  t.equal(last, seen.at(-1), 'flush publishes what it returns')
  t.equal(last.pods[0]!.ready, true, 'the verdict made during the build is in the Snapshot flush returns')
  t.same(
    seen.map((s) => s.version),
    seen.map((_, i) => i + 1),
    'versions are consecutive: no build was lost or published twice',
  )
  for (const s of seen.slice(1)) t.ok(s.changes, `version ${s.version} says what changed`)
})
