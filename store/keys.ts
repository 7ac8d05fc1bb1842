// What lives under the prefix (README "Behaviour"):
//
//   PREFIX/objects/<group.version-Kind>/<namespace|_>/<name>   one manifest document, JSON (meshlet apply)
//   PREFIX/nodes/<node>                                         {addresses, adminPort, version}, on the node's lease
//   PREFIX/owners/<ip>                                          the node announcing a LoadBalancer address, on its lease
//   PREFIX/alloc/clusterip/<ip>                                 the object key a ClusterIP is allocated to (meshlet apply)
//   PREFIX/alloc/nodeport/<port>                                the object key a NodePort (or health-check port) is allocated to
//
// The apiVersion's "/" becomes "." so that each object is exactly three segments below objects/ (etcdctl get --prefix
// PREFIX/objects/v1-Service/default/ lists one namespace's Services); cluster-scoped kinds use "_" as namespace,
// which no namespace can be (DNS label).

import type { KubeObject } from '../model/objects.ts'

export const objectsPrefix = (prefix: string) => `${prefix}/objects/`

export function objectKey(prefix: string, apiVersion: string, o: KubeObject): string {
  const ns = o.meta.namespace === '' ? '_' : o.meta.namespace
  return `${objectsPrefix(prefix)}${apiVersion.replace(/\//g, '.')}-${o.kind}/${ns}/${o.meta.name}`
}
export const nodesPrefix = (prefix: string) => `${prefix}/nodes/`
export const nodeKey = (prefix: string, node: string) => `${nodesPrefix(prefix)}${node}`
export const ownersPrefix = (prefix: string) => `${prefix}/owners/`
export const ownerKey = (prefix: string, ip: string) => `${ownersPrefix(prefix)}${ip}`
/** PREFIX/alloc/clusterip/<ip>, PREFIX/alloc/nodeport/<port> → the object key holding it (store/alloc.ts). */
export const allocPrefix = (prefix: string) => `${prefix}/alloc/`
export const allocKey = (prefix: string, slot: string) => `${allocPrefix(prefix)}${slot}`
