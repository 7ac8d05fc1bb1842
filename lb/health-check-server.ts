// healthCheckNodePort (specs/l4-health.md §3.8): for a LoadBalancer Service with externalTrafficPolicy Local,
// an HTTP server on the node addresses that answers every path and method with kube-proxy's JSON: 200 when this
// node has ready local endpoints and the proxy is healthy, 503 otherwise. External load balancers use it to drain
// nodes without local endpoints.

import { createServer, type Server } from 'node:http'
import type { Logger } from 'pino'
import type { ServiceState } from '../model/snapshot.ts'
import { localReadyIps } from './usable-endpoints.ts'

export interface HealthCheckState {
  namespace: string
  name: string
  localEndpoints: number
  proxyHealthy: boolean
}

export class HealthCheckServer {
  readonly port: number
  readonly address: string
  state: HealthCheckState
  error: string | null = null
  #server: Server

  constructor(address: string, port: number, state: HealthCheckState) {
    this.address = address
    this.port = port
    this.state = state
    this.#server = createServer((req, res) => {
      req.resume()
      const s = this.state
      const ok = s.localEndpoints > 0 && s.proxyHealthy
      res.writeHead(ok ? 200 : 503, {
        'content-type': 'application/json',
        'x-content-type-options': 'nosniff',
        'x-load-balancing-endpoint-weight': String(s.localEndpoints),
      })
      res.end(
        JSON.stringify({
          service: { namespace: s.namespace, name: s.name },
          localEndpoints: s.localEndpoints,
          serviceProxyHealthy: s.proxyHealthy,
        }),
      )
    })
  }

  listen(): Promise<void> {
    return new Promise((resolve) => {
      this.#server.once('error', (err: NodeJS.ErrnoException) => {
        this.error = `${err.code}: cannot listen on ${this.address}:${this.port}`
        resolve()
      })
      this.#server.listen({ host: this.address, port: this.port, exclusive: true }, () => resolve())
    })
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.#server.close(() => resolve())
      this.#server.closeAllConnections()
    })
  }
}

/**
 * Brings `servers` (by Service key) to `want`: a server whose port changed or whose Service left is closed, a new
 * one listens on `address`, an existing one only takes the new state (this node's ready endpoints). Both data planes
 * (userspace and nftables) keep their health-check node ports this way.
 */
export function reconcileHealthChecks(
  servers: Map<string, HealthCheckServer>,
  want: ReadonlyMap<string, { svc: ServiceState; port: number }>,
  opts: { node: string; address: string; log: Logger },
): void {
  for (const [key, hc] of servers) {
    if (want.get(key)?.port !== hc.port) {
      servers.delete(key)
      void hc.close()
    }
  }
  for (const [key, { svc, port }] of want) {
    const state = {
      namespace: svc.namespace,
      name: svc.name,
      localEndpoints: localReadyIps(svc, opts.node),
      proxyHealthy: true,
    }
    const hc = servers.get(key)
    if (hc) hc.state = state
    else {
      const server = new HealthCheckServer(opts.address, port, state)
      servers.set(key, server)
      void server.listen().then(() => {
        if (server.error) opts.log.error({ service: key }, server.error)
      })
    }
  }
}
