// The Snapshot before the first one: the zone built from it holds only the apex records, and the plane answers
// in-zone names with SERVFAIL until a real Snapshot is applied (specs/dns.md §10).

import type { Snapshot } from '../model/snapshot.ts'

export const EMPTY_SNAPSHOT: Snapshot = {
  version: 0,
  builtAt: 0,
  nodeName: '',
  objects: [],
  services: [],
  pods: [],
  nodes: [],
  ingresses: [],
  ingressClasses: [],
  secrets: [],
  pools: [],
  l2Advertisements: [],
  namespaces: [],
  errors: [],
  ejected: {},
  nodeLiveness: {},
}
