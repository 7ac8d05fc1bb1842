// The Compose topology end to end in network namespaces (e2e-topology.ts), meshlet with root's full capability set.

import t from 'tap'
import { runComposeTopology, skip } from './e2e-topology.ts'

if (skip) {
  t.comment(`skipped: ${skip}`)
  t.plan(0, skip)
} else {
  t.test('Compose topology end to end', { timeout: 150000 }, async (t) =>
    runComposeTopology(t, { capabilities: null, light: false }),
  )
}
