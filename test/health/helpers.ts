// Shared pieces of the health tests: typed objects built by hand (the shapes model/validate.ts produces), a Store with
// the health plane on it, real backends that fail and recover on command, and polling helpers.

import { podObject, serviceObject, servicePort } from '../helpers/objects.ts'
import { testRuntimeOptions } from '../helpers/options.ts'
export { waitFor } from '../helpers/wait.ts'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import type { Container, ContainerPort, ObjectMeta, Pod, Probe, ProbeHandler, Service } from '../../model/objects.ts'
import type { RuntimeOptions } from '../../model/options.ts'
import { noopReporter, type PodHealth } from '../../model/snapshot.ts'
import { Store } from '../../model/store.ts'
import { startHealth, type HealthPlane } from '../../health/index.ts'
import type { ProbeStatus } from '../../health/probe-worker.ts'

interface Teardown {
  teardown(fn: () => unknown): void
}

export interface ProbeOptions {
  initialDelaySeconds?: number
  periodSeconds?: number
  timeoutSeconds?: number
  successThreshold?: number
  failureThreshold?: number
}

/** Test defaults: period 1 s (the kubelet minimum) so that tests stay fast. */
export function probe(handler: ProbeHandler, o: ProbeOptions = {}): Probe {
  return {
    handler,
    initialDelaySeconds: o.initialDelaySeconds ?? 0,
    periodSeconds: o.periodSeconds ?? 1,
    timeoutSeconds: o.timeoutSeconds ?? 1,
    successThreshold: o.successThreshold ?? 1,
    failureThreshold: o.failureThreshold ?? 3,
  }
}

export function httpGet(
  port: number,
  path = '/',
  extra: Partial<Extract<ProbeHandler, { type: 'httpGet' }>> = {},
): ProbeHandler {
  return { type: 'httpGet', scheme: 'HTTP', host: null, path, port, httpHeaders: [], ...extra }
}

export function container(
  name: string,
  probes: { readiness?: Probe; liveness?: Probe; startup?: Probe; ports?: ContainerPort[] } = {},
): Container {
  return {
    name,
    ports: probes.ports ?? [],
    readinessProbe: probes.readiness ?? null,
    livenessProbe: probes.liveness ?? null,
    startupProbe: probes.startup ?? null,
  }
}

export function pod(name: string, ip: string, containers: Container[], extra: Partial<ObjectMeta> = {}): Pod {
  return podObject(name, ip, containers, { labels: { app: 'web' }, ...extra })
}

/** A headless Service (port 80 → targetPort) selecting app=web Pods. */
export function service(
  name: string,
  targetPort: number,
  annotations: Record<string, string> = {},
  selector = { app: 'web' },
): Service {
  return serviceObject(
    name,
    { selector, clusterIPs: ['None'], headless: true, ports: [servicePort(80, { targetPort })] },
    { annotations },
  )
}

export const baseOptions: RuntimeOptions = testRuntimeOptions()

export interface Harness {
  readonly store: Store
  readonly plane: HealthPlane
  readonly metrics: Registry
  /** Pod "default/NAME" verdict as the Snapshot carries it. */
  podReady(name: string): boolean | undefined
  health(name: string): PodHealth | null | undefined
  /** The ready condition of ip in Service "default/NAME" (first port), undefined when absent. */
  endpointReady(svc: string, ip: string, port?: number): boolean | undefined
  probeStatus(podName: string, kind: string, container?: string): ProbeStatus | undefined
}

export async function startPlane(
  t: Teardown,
  objects: (Pod | Service)[],
  options: Partial<RuntimeOptions> = {},
): Promise<Harness> {
  const store = new Store({ nodeName: 'test-node', serviceCidrs: [] })
  store.setObjects(objects, [])
  store.flush()
  const metrics = new Registry()
  const plane = await startHealth({
    store,
    options: { ...baseOptions, ...options },
    log: pino({ level: 'silent' }),
    metrics,
    reporter: noopReporter,
  })
  t.teardown(() => plane.close(Date.now()))
  const snap = () => store.current!
  return {
    store,
    plane,
    metrics,
    podReady: (name) => snap().pods.find((p) => p.key === `default/${name}`)?.ready,
    health: (name) => snap().pods.find((p) => p.key === `default/${name}`)?.health,
    endpointReady: (svc, ip, port) =>
      snap()
        .services.find((s) => s.key === `default/${svc}`)
        ?.ports[0]?.endpoints.find((e) => e.ip === ip && (port === undefined || e.port === port))?.ready,
    probeStatus: (podName, kind, c) => {
      const p = plane.status().pods.find((x) => x.pod === `default/${podName}`)
      const ctr = c ? p?.containers.find((x) => x.name === c) : p?.containers[0]
      return ctr?.probes.find((x) => x.kind === kind)
    },
  }
}

export type BackendMode = 'ok' | 'fail' | 'hang'

/** An HTTP backend on 127.0.0.1:0 whose answer is switched by the test; it records the requests it got. */
export interface Backend {
  readonly port: number
  readonly server: Server
  mode: BackendMode
  status: number
  readonly requests: IncomingMessage[]
  /** Client port of each request, in order (distinct ports = distinct connections). */
  readonly remotePorts: number[]
  /** Date.now() of each request, in order. */
  readonly times: number[]
  handler: ((req: IncomingMessage, res: ServerResponse) => boolean) | null
}

export async function httpBackend(t: Teardown, host = '127.0.0.1'): Promise<Backend> {
  const b: Backend = {
    port: 0,
    server: null as unknown as Server,
    mode: 'ok',
    status: 200,
    requests: [],
    remotePorts: [],
    times: [],
    handler: null,
  }
  const hung: ServerResponse[] = []
  const server = createServer((req, res) => {
    b.requests.push(req)
    b.remotePorts.push(req.socket.remotePort ?? 0)
    b.times.push(Date.now())
    if (b.handler && b.handler(req, res)) return
    if (b.mode === 'hang') {
      hung.push(res)
      return
    }
    res.writeHead(b.mode === 'ok' ? b.status : 500, { 'content-type': 'text/plain' })
    res.end(b.mode === 'ok' ? 'ok\n' : 'broken\n')
  })
  await new Promise<void>((resolve) => server.listen(0, host, resolve))
  ;(b as { port: number }).port = (server.address() as AddressInfo).port
  ;(b as { server: Server }).server = server
  t.teardown(() => {
    for (const r of hung) r.destroy()
    server.closeAllConnections()
    return new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return b
}
