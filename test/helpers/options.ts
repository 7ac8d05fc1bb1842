// RuntimeOptions for planes started in-process by tests and benchmarks: DEFAULT_OPTIONS (the one place defaults live)
// with every listener off, loopback-safe values, no upstream resolver (never the machine's). Override what the test
// needs.

import { DEFAULT_OPTIONS, type RuntimeOptions } from '../../model/options.ts'

export function testRuntimeOptions(over: Partial<RuntimeOptions> = {}): RuntimeOptions {
  return {
    ...DEFAULT_OPTIONS,
    nodeName: 'test-node',
    dns: null,
    http: null,
    https: null,
    admin: null,
    serviceCidrs: [],
    vipMode: 'none',
    logLevel: 'silent',
    // Tests of the userspace plane stay on it whatever the machine allows; nftables tests ask for it.
    l4Mode: 'userspace',
    // One proxy thread: in-process planes under test never spawn workers unless a test asks (test/proxy/workers).
    proxyWorkers: 1,
    ...over,
  }
}
