// Test helpers for the proxy: typed objects built by hand (model/objects.ts shapes), echo backends that report what
// they received, and an in-process proxy plane on 127.0.0.1 port 0 fed by a real Store.

import { objectMeta, podObject, serviceObject, servicePort } from '../helpers/objects.ts'
import { testRuntimeOptions } from '../helpers/options.ts'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { pino, type Logger } from 'pino'
import type { ProxyStatusJson } from '../helpers/status.ts'
import { Registry } from 'prom-client'
import { request } from 'undici'
import type { Ingress, IngressPath, KubeObject, ObjectMeta, Pod, Secret, Service } from '../../model/objects.ts'
import type { RuntimeOptions } from '../../model/options.ts'
import { noopReporter, type UpstreamReporter } from '../../model/snapshot.ts'
import { Store } from '../../model/store.ts'
import { startProxyWith, type ProxyExtraOptions, type ProxyPlane } from '../../proxy/index.ts'
import { rawEngineAvailable } from '../../proxy/h1/engine.ts'
import type { Test } from 'tap'

export interface Teardown {
  teardown(fn: () => unknown): void
}

export function meta(
  name: string,
  namespace = 'default',
  annotations: Record<string, string> = {},
  labels: Record<string, string> = {},
): ObjectMeta {
  return objectMeta(name, { namespace, labels, annotations })
}

/** A ClusterIP Service selecting Pods labelled app=<name>, one TCP port 8080 named "http" → container port "http". */
export function service(
  name: string,
  opts: { ns?: string; ports?: { name: string; port: number; targetPort?: number | string }[] } = {},
): Service {
  const ports = opts.ports ?? [{ name: 'http', port: 8080, targetPort: 'http' }]
  return serviceObject(
    name,
    { ports: ports.map((p) => servicePort(p.port, { name: p.name, targetPort: p.targetPort ?? p.port })) },
    { namespace: opts.ns ?? 'default' },
  )
}

/** A Pod of app=<app> at ip with container port "http" = port. */
export function pod(
  name: string,
  app: string,
  ip: string,
  port: number,
  opts: { ns?: string; probe?: boolean; terminating?: boolean } = {},
): Pod {
  const container = {
    name: 'c',
    ports: [{ name: 'http', containerPort: port, protocol: 'TCP' as const }],
    readinessProbe: opts.probe
      ? {
          handler: { type: 'tcpSocket' as const, host: null, port },
          initialDelaySeconds: 0,
          periodSeconds: 10,
          timeoutSeconds: 1,
          successThreshold: 1,
          failureThreshold: 3,
        }
      : null,
    livenessProbe: null,
    startupProbe: null,
  }
  return podObject(name, ip, [container], {
    namespace: opts.ns ?? 'default',
    labels: { app },
    deletionTimestamp: opts.terminating ? '2026-01-01T00:00:00Z' : null,
  })
}

export type PathSpec = [path: string, pathType: IngressPath['pathType'], service: string, port?: number | string]

export function ingress(
  name: string,
  rules: { host?: string | null; paths: PathSpec[] }[],
  opts: {
    ns?: string
    annotations?: Record<string, string>
    className?: string | null
    defaultBackend?: [service: string, port: number | string]
    tls?: { hosts: string[]; secretName: string | null }[]
  } = {},
): Ingress {
  const backend = (svc: string, port: number | string = 8080) => ({
    service: {
      name: svc,
      port: typeof port === 'number' ? { number: port, name: null } : { number: null, name: port },
    },
  })
  return {
    kind: 'Ingress',
    meta: meta(name, opts.ns, opts.annotations ?? {}),
    spec: {
      ingressClassName: opts.className === undefined ? 'meshlet' : opts.className,
      defaultBackend: opts.defaultBackend ? backend(opts.defaultBackend[0], opts.defaultBackend[1]) : null,
      tls: opts.tls ?? [],
      rules: rules.map((r) => ({
        host: r.host ?? null,
        paths: r.paths.map(([path, pathType, svc, port]) => ({ path, pathType, backend: backend(svc, port) })),
      })),
    },
  }
}

export function tlsSecret(name: string, cert: string, key: string, ns = 'default'): Secret {
  return { kind: 'Secret', meta: meta(name, ns), type: 'kubernetes.io/tls', tls: { cert, key } }
}

// ---------------------------------------------------------------- echo backends

export interface EchoBackend {
  readonly name: string
  readonly host: string
  readonly port: number
  readonly server: Server
  /** Requests received. */
  count: number
  /** Replaced to change behaviour (default: echo). */
  handler: ((req: IncomingMessage, res: ServerResponse, echo: () => void) => void) | null
  close(): Promise<void>
}

export interface Echo {
  server: string
  method: string
  url: string
  httpVersion: string
  headers: Record<string, string | string[] | undefined>
  rawHeaders: string[]
  body: string
}

/** An HTTP server answering JSON describing the request it got (method, url, headers, body, its own name). */
export async function echoBackend(t: Teardown, name: string, host = '127.0.0.1'): Promise<EchoBackend> {
  const b: EchoBackend = {
    name,
    host,
    port: 0,
    server: null as unknown as Server,
    count: 0,
    handler: null,
    close: async () => {
      b.server.closeAllConnections()
      await new Promise<void>((r) => b.server.close(() => r()))
    },
  }
  const server = createServer((req, res) => {
    b.count++
    const echo = () => {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        const body: Echo = {
          server: name,
          method: req.method!,
          url: req.url!,
          httpVersion: req.httpVersion,
          headers: req.headers,
          rawHeaders: req.rawHeaders,
          body: Buffer.concat(chunks).toString(),
        }
        const text = JSON.stringify(body)
        res.writeHead(200, {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(text),
          server: `echo-${name}`,
        })
        res.end(text)
      })
    }
    if (b.handler) b.handler(req, res, echo)
    else echo()
  })
  ;(b as { server: Server }).server = server
  await new Promise<void>((r) => server.listen(0, host, () => r()))
  ;(b as { port: number }).port = (server.address() as AddressInfo).port
  t.teardown(() => (server.listening ? b.close() : undefined))
  return b
}

// ---------------------------------------------------------------- the plane

export function runtimeOptions(over: Partial<RuntimeOptions> = {}): RuntimeOptions {
  return testRuntimeOptions({ http: { host: '127.0.0.1', port: 0 }, ...over })
}

// ---------------------------------------------------------------- engines

/** Every engine the http listener ships: the conformance suites run once per engine, so none is untested. */
export const ENGINES = ['raw', 'node'] as const
export type EngineName = (typeof ENGINES)[number]

/** The engine a test registered by `engineTest` runs on; `startRouter` reads it for routers that test starts. */
const engineOfTest = new WeakMap<Teardown, EngineName>()

/**
 * Registers `name` once per engine (`name [raw]`, `name [node]`). Routers started with the subtest's `t` use that
 * engine unless the test passes `extra.engine` itself. The raw engine's run fails, rather than quietly testing the
 * fallback twice, if this Node cannot load it.
 */
export function engineTest(parent: Test, name: string, fn: (t: Test, engine: EngineName) => Promise<void>): void {
  for (const engine of ENGINES)
    parent.test(`${name} [${engine}]`, async (t) => {
      if (engine === 'raw' && !rawEngineAvailable) t.fail('the raw engine does not load on this Node')
      engineOfTest.set(t, engine)
      await fn(t, engine)
    })
}

export interface Router {
  readonly store: Store
  readonly plane: ProxyPlane
  readonly metrics: Registry
  readonly http: { host: string; port: number }
  readonly https: { host: string; port: number } | null
  readonly url: string
  /** Replaces every object and waits until the plane has applied the new Snapshot. */
  set(objects: KubeObject[]): void
  status(): ProxyStatusJson
}

export async function startRouter(
  t: Teardown,
  objects: KubeObject[],
  opts: {
    options?: Partial<RuntimeOptions>
    extra?: ProxyExtraOptions
    reporter?: UpstreamReporter
    log?: Logger
  } = {},
): Promise<Router> {
  const options = runtimeOptions(opts.options)
  const store = new Store({ nodeName: 'test-node', serviceCidrs: [] })
  const metrics = new Registry()
  const log = opts.log ?? pino({ level: 'silent' })
  store.setObjects(objects, [])
  store.flush()
  const engine = engineOfTest.get(t)
  const extra: ProxyExtraOptions = engine !== undefined ? { engine, ...opts.extra } : (opts.extra ?? {})
  const plane = await startProxyWith({ store, options, log, metrics, reporter: opts.reporter ?? noopReporter }, extra)
  t.teardown(() => plane.close(Date.now() + 500))
  const st = plane.status() as ProxyStatusJson
  // The raw engine alone counts its connections in /status: proof that the engine asked for is the one running.
  if (
    engine !== undefined &&
    st.listeners.http &&
    (st.listeners.http.connections !== null) !== (extra.engine === 'raw')
  )
    throw new Error(`the http listener does not run the ${extra.engine} engine`)
  const http = st.listeners.http ? { host: st.listeners.http.address, port: st.listeners.http.port } : null
  const https = st.listeners.https ? { host: st.listeners.https.address, port: st.listeners.https.port } : null
  return {
    store,
    plane,
    metrics,
    http: http!,
    https,
    url: http ? `http://${http.host}:${http.port}` : '',
    set(objs) {
      store.setObjects(objs, [])
      store.flush()
    },
    status: () => plane.status() as ProxyStatusJson,
  }
}

/** GET (or other method) through the router with a Host header; returns status, headers and parsed JSON or text. */
export async function get(
  router: Router,
  host: string | null,
  path: string,
  opts: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<{
  status: number
  headers: Record<string, string | string[] | undefined>
  text: string
  echo: Echo | null
}> {
  const headers: Record<string, string> = { ...(opts.headers ?? {}) }
  if (host !== null) headers.host = host
  const res = await request(router.url + path, { method: (opts.method ?? 'GET') as 'GET', headers, body: opts.body })
  const text = await res.body.text()
  let echo: Echo | null = null
  if (String(res.headers['content-type'] ?? '').startsWith('application/json')) echo = JSON.parse(text)
  return { status: res.statusCode, headers: res.headers, text, echo }
}

/** Sends raw bytes to host:port and resolves with everything received until the server closes or `ms` passes. */
export async function rawRequest(addr: { host: string; port: number }, bytes: string, ms = 2000): Promise<string> {
  const { connect } = await import('node:net')
  return new Promise((resolve) => {
    const sock = connect(addr.port, addr.host)
    let out = ''
    const timer = setTimeout(() => {
      sock.destroy()
      resolve(out)
    }, ms)
    sock.setEncoding('latin1')
    sock.on('data', (d: string) => {
      out += d
    })
    sock.on('close', () => {
      clearTimeout(timer)
      resolve(out)
    })
    sock.on('error', () => {})
    sock.write(bytes, 'latin1')
  })
}

/** Polls `fn` until it returns true (generous timeout: loaded 2-core CI). */
export async function eventually(fn: () => boolean | Promise<boolean>, timeoutMs = 10000): Promise<void> {
  const until = Date.now() + timeoutMs
  while (Date.now() < until) {
    if (await fn()) return
    await new Promise((r) => setTimeout(r, 20))
  }
  throw new Error('condition not met in time')
}

/** A self-signed certificate for `host` (openssl), for TLS tests. */
export async function makeCert(host: string): Promise<{ cert: string; key: string }> {
  const { execFileSync } = await import('node:child_process')
  const { mkdtempSync, readFileSync, rmSync } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const dir = mkdtempSync(`${tmpdir()}/meshlet-tls-`)
  try {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        `${dir}/key.pem`,
        '-out',
        `${dir}/cert.pem`,
        '-days',
        '2',
        '-subj',
        `/CN=${host}`,
        '-addext',
        `subjectAltName=DNS:${host}`,
      ],
      { stdio: 'ignore' },
    )
    return { cert: readFileSync(`${dir}/cert.pem`, 'utf8'), key: readFileSync(`${dir}/key.pem`, 'utf8') }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
