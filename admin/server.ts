// The admin API: /healthz (alive), /readyz (first Snapshot applied and every enabled plane's listeners up; when not,
// which listener and why),
// /status (JSON: configuration, Services with endpoints and addresses, planes), /metrics (Prometheus text).
// It answers for meshlet itself, never for the health of backends (DESIGN.md).

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Logger } from 'pino'
import type { Registry } from 'prom-client'
import type { ListenAddress } from '../model/options.ts'
import { publishListener } from '../model/diagnostics.ts'
import { fixFor } from '../model/errors.ts'
import type { Plane } from '../model/plane.ts'
import type { Store } from '../model/store.ts'
import type { Snapshot } from '../model/snapshot.ts'
import { Dashboard, UI_FILES } from './dashboard.ts'

export interface AdminSources {
  readonly store: Store
  readonly planes: () => readonly Plane[]
  /** The configuration provider's status (files, reload history). */
  readonly config: () => unknown
  readonly metrics: Registry
  readonly startedAt: number
  readonly version: string
  readonly nodeName: string
}

export function snapshotStatus(s: Snapshot | null): unknown {
  if (!s) return null
  return {
    version: s.version,
    builtAt: new Date(s.builtAt).toISOString(),
    objects: countByKind(s),
    namespaces: s.namespaces,
    errors: s.errors,
    services: s.services.map((svc) => ({
      key: svc.key,
      type: svc.service.spec.type,
      headless: svc.headless,
      clusterIPs: svc.clusterIPs,
      externalName: svc.service.spec.externalName,
      loadBalancerIPs: svc.loadBalancerIPs,
      loadBalancerPool: svc.loadBalancerPool,
      loadBalancerPending: svc.loadBalancerPending,
      loadBalancerStale: svc.loadBalancerStale,
      healthCheckNodePort: svc.healthCheckNodePort,
      ports: svc.ports.map((p) => ({
        name: p.name,
        protocol: p.protocol,
        port: p.port,
        targetPort: p.targetPort,
        nodePort: p.nodePort,
        endpoints: p.endpoints.map((e) => ({
          ip: e.ip,
          port: e.port,
          ready: e.ready,
          serving: e.serving,
          terminating: e.terminating,
          nodeName: e.nodeName,
          pod: e.pod,
          ...(s.ejected[`${svc.key}|${e.ip}|${e.port}`] ? { ejected: s.ejected[`${svc.key}|${e.ip}|${e.port}`] } : {}),
        })),
      })),
      addresses: svc.addresses,
      warnings: svc.warnings,
    })),
    pods: s.pods.map((p) => ({
      key: p.key,
      ip: p.pod.status.podIP,
      node: p.pod.spec.nodeName,
      ready: p.ready,
      health: p.health,
    })),
  }
}

function countByKind(s: Snapshot): Record<string, number> {
  const out: Record<string, number> = {}
  for (const o of s.objects) out[o.kind] = (out[o.kind] ?? 0) + 1
  return out
}

export function isReady(src: AdminSources): boolean {
  // No planes yet means they are still starting (bin/ hands them over once all have): not ready, not vacuously so.
  const planes = src.planes()
  return src.store.current !== null && planes.length > 0 && planes.every((p) => p.ready())
}

/**
 * The 503 body: the first line names what is missing (as before), then one line per reason a plane gives, e.g.
 * "lb: listener TCP 198.18.0.130:80 (default/web): ip address add ... failed: ...".
 */
function notReadyText(src: AdminSources): string {
  if (src.store.current === null) return 'not ready: snapshot\n'
  if (src.planes().length === 0) return 'not ready: planes starting\n'
  const waiting = src.planes().filter((p) => !p.ready())
  const lines = [`not ready: ${waiting.map((p) => p.name).join(', ')}`]
  for (const p of waiting) for (const why of p.unready?.() ?? []) lines.push(`${p.name}: ${why}`)
  return lines.join('\n') + '\n'
}

/** One "degraded: plane: why" line per reason a ready plane serves older state (etcd mode's static stability). */
function degradedText(src: AdminSources): string {
  let out = ''
  for (const p of src.planes()) for (const why of p.degraded?.() ?? []) out += `degraded: ${p.name}: ${why}\n`
  return out
}

/**
 * JSON.stringify replacer for /status: every entry that carries an MLT_ code gets its catalogue's what-to-do beside it
 * (`fix`), so the planes' status() objects stay as they are and a reader never has to look the code up.
 */
function withFix(_key: string, value: unknown): unknown {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return value
  const code = (value as { code?: unknown }).code
  if (typeof code !== 'string' || 'fix' in value) return value
  const fix = fixFor(code)
  return fix === null ? value : { ...value, fix }
}

function send(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' })
  res.end(body)
}

/** The page's own script and the event stream only: no inline script, nothing from elsewhere. */
const UI_CSP = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; img-src 'self'"

async function handle(
  src: AdminSources,
  dashboard: Dashboard,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const path = (req.url ?? '/').split('?')[0]!
  if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'text/plain', 'method not allowed\n')
  const ui = Object.hasOwn(UI_FILES, path) ? UI_FILES[path] : undefined
  if (ui !== undefined) {
    res.writeHead(200, {
      'content-type': ui.type,
      'cache-control': 'no-store',
      'content-security-policy': UI_CSP,
      'x-content-type-options': 'nosniff',
    })
    return void res.end(ui.body)
  }
  switch (path) {
    case '/':
      res.writeHead(302, { location: '/ui' })
      return void res.end()
    case '/ui/events':
      if (!dashboard.subscribe(res)) send(res, 503, 'text/plain', 'too many dashboard viewers\n')
      return
    case '/healthz':
      return send(res, 200, 'text/plain', 'ok\n')
    case '/readyz': {
      if (isReady(src)) return send(res, 200, 'text/plain', 'ready\n' + degradedText(src))
      return send(res, 503, 'text/plain', notReadyText(src))
    }
    case '/status': {
      const planes: Record<string, unknown> = {}
      for (const p of src.planes()) {
        try {
          planes[p.name] = { ready: p.ready(), ...(p.status() as object) }
        } catch (err) {
          planes[p.name] = { ready: p.ready(), error: (err as Error).message }
        }
      }
      const body = {
        meshlet: {
          version: src.version,
          node: src.nodeName,
          uptimeSeconds: (Date.now() - src.startedAt) / 1000,
          ready: isReady(src),
        },
        config: src.config(),
        snapshot: snapshotStatus(src.store.current),
        planes,
      }
      return send(res, 200, 'application/json', JSON.stringify(body, withFix, 2) + '\n')
    }
    case '/metrics':
      return send(res, 200, src.metrics.contentType, await src.metrics.metrics())
    default:
      return send(res, 404, 'text/plain', 'not found\n')
  }
}

export class AdminServer {
  #server: Server
  #src: AdminSources
  #log: Logger
  #dashboard: Dashboard

  constructor(src: AdminSources, log: Logger) {
    this.#src = src
    this.#log = log
    this.#dashboard = new Dashboard({
      snapshot: () => src.store.current,
      planes: src.planes,
      metrics: src.metrics,
      ready: () => isReady(src),
      admin: () => {
        const a = this.#server.address()
        return a !== null && typeof a === 'object' ? { address: a.address, port: a.port } : null
      },
    })
    this.#server = createServer((req, res) => {
      handle(this.#src, this.#dashboard, req, res).catch((err: unknown) => {
        this.#log.error({ err }, 'admin request failed')
        if (!res.headersSent) send(res, 500, 'text/plain', 'internal error\n')
        else res.destroy()
      })
    })
    this.#server.keepAliveTimeout = 5000
  }

  listen(addr: ListenAddress): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      const failed = (err: Error) => {
        publishListener('admin', 'admin', addr.host, addr.port, err)
        reject(err)
      }
      this.#server.once('error', failed)
      this.#server.listen(addr.port, addr.host, () => {
        this.#server.off('error', failed)
        const info = this.#server.address() as AddressInfo
        this.#log.info({ listener: 'admin', address: info.address, port: info.port }, 'listening')
        publishListener('admin', 'admin', info.address, info.port, null)
        resolve(info)
      })
    })
  }

  close(): Promise<void> {
    this.#dashboard.close()
    return new Promise((resolve) => {
      this.#server.close(() => resolve())
      this.#server.closeAllConnections()
    })
  }
}
