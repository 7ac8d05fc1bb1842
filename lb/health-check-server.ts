// healthCheckNodePort (specs/l4-health.md §3.8): for a LoadBalancer Service with externalTrafficPolicy Local,
// an HTTP server on the node addresses that answers every path and method with kube-proxy's JSON: 200 when this
// node has ready local endpoints and the proxy is healthy, 503 otherwise. External load balancers use it to drain
// nodes without local endpoints.

import { createServer, type Server } from 'node:http'

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
