// The Compose topology end to end in network namespaces (e2e-topology.ts), meshlet with root's full capability set.

import t from 'tap'
import { runComposeTopology, skip } from './e2e-topology.ts'

// tap's skip (reported as skipped, and refused in CI by .ci/no-skips.sh), never a pass.
t.test('Compose topology end to end', { timeout: 150000, skip: skip ?? false }, async (t) =>
  runComposeTopology(t, { capabilities: null, light: false }),
)
