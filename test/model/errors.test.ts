// MeshletError's instanceof: the brand holds across two loaded copies of the module for MeshletError itself, and a
// subclass keeps ordinary instanceof (a ConfigError must not be taken for the CLI's UsageError: exit 2 vs 1).

import t from 'tap'
import { MeshletError } from '../../model/errors.ts'
import { ConfigError } from '../../model/config-errors.ts'
import { UsageError } from '../../bin/cli-options.ts'

t.test('instanceof: brand for the base class, prototype chain for subclasses', async (t) => {
  const config = new ConfigError('MLT_CONFIG_UNREADABLE', 'x: cannot be read')
  const usage = new UsageError('--dns-ttl: expected 0-3600, got "x"')
  t.ok(config instanceof MeshletError)
  t.ok(usage instanceof MeshletError)
  t.ok(usage instanceof UsageError)
  t.notOk(config instanceof UsageError, 'a ConfigError is not a UsageError')
  t.notOk(usage instanceof ConfigError)
  t.equal(usage.code, 'MLT_CLI_USAGE')
  t.equal(usage.name, 'UsageError')
  // A copy of the base class from another module instance carries the same Symbol.for brand.
  const foreign = Object.assign(new Error('x'), { [Symbol.for('meshlet.error')]: true })
  t.ok(foreign instanceof MeshletError, 'branded error from another copy of model/errors.ts')
  t.notOk(foreign instanceof ConfigError)
})
