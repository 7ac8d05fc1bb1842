// RuntimeOptions for planes started in-process by tests and benchmarks: every listener off, loopback-safe defaults,
// no upstream resolver (never the machine's). Override what the test needs.

import type { RuntimeOptions } from '../../model/options.ts'

export function testRuntimeOptions(over: Partial<RuntimeOptions> = {}): RuntimeOptions {
  return {
    files: [],
    nodeName: 'test-node',
    nodeAddress: null,
    dns: null,
    http: null,
    https: null,
    admin: null,
    upstreams: [],
    clusterDomain: 'cluster.local',
    serviceCidrs: [],
    vipMode: 'none',
    vipInterface: null,
    dnsTtl: 5,
    ingressClass: 'meshlet',
    accessLog: false,
    trustForwardedFrom: [],
    execPrefix: null,
    onLivenessFailure: null,
    logLevel: 'silent',
    // Tests of the userspace plane stay on it whatever the machine allows; nftables tests ask for it.
    l4Mode: 'userspace',
    ...over,
  }
}
