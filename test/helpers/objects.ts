// Typed model objects for tests that start a plane in-process (no YAML): one place that spells out every field of
// ObjectMeta, Service and Pod, so a field added to model/objects.ts is added here once, not in each plane's helpers.
// Defaults are Kubernetes' (ClusterIP, TCP, Cluster policies, 10800 s affinity timeout); tests override what they test.

import type { Container, ObjectMeta, Pod, Service, ServicePort, ServiceSpec } from '../../model/objects.ts'

export function objectMeta(name: string, over: Partial<ObjectMeta> = {}): ObjectMeta {
  return {
    name,
    namespace: 'default',
    labels: {},
    annotations: {},
    deletionTimestamp: null,
    source: { file: 'test.yaml', doc: 1 },
    ...over,
  }
}

/** A TCP Service port; targetPort defaults to the port. */
export function servicePort(port: number, over: Partial<ServicePort> = {}): ServicePort {
  return { name: '', protocol: 'TCP', port, targetPort: port, nodePort: null, appProtocol: null, ...over }
}

/** A ClusterIP Service (no address written: the Store allocates one) with Kubernetes' defaults. */
export function serviceObject(name: string, spec: Partial<ServiceSpec> = {}, meta: Partial<ObjectMeta> = {}): Service {
  return {
    kind: 'Service',
    meta: objectMeta(name, meta),
    spec: {
      type: 'ClusterIP',
      selector: { app: name },
      clusterIPs: [],
      headless: false,
      ipFamilies: [],
      ipFamilyPolicy: 'SingleStack',
      ports: [],
      externalName: null,
      externalIPs: [],
      sessionAffinity: 'None',
      affinityTimeoutSeconds: 10800,
      externalTrafficPolicy: 'Cluster',
      internalTrafficPolicy: 'Cluster',
      trafficDistribution: null,
      publishNotReadyAddresses: false,
      healthCheckNodePort: null,
      loadBalancerIP: null,
      loadBalancerClass: null,
      ...spec,
    },
  }
}

/** A running Pod on node "test-node" at `ip`. */
export function podObject(
  name: string,
  ip: string,
  containers: readonly Container[],
  meta: Partial<ObjectMeta> = {},
): Pod {
  return {
    kind: 'Pod',
    meta: objectMeta(name, meta),
    spec: { nodeName: 'test-node', hostname: null, subdomain: null, containers },
    status: { podIP: ip, podIPs: [ip] },
  }
}
