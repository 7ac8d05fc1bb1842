// One other node, probed at `http://<InternalIP>:<admin port>/healthz` every second (timeout 1 s, never two probes
// in flight): FAILURE_THRESHOLD consecutive failures → dead, one success → alive. Only transitions are reported.

import { request } from 'node:http'

/** Consecutive failed probes before a peer counts as dead. */
export const FAILURE_THRESHOLD = 3
export const PROBE_INTERVAL_MS = 1000
export const PROBE_TIMEOUT_MS = 1000

export interface PeerTarget {
  readonly node: string
  readonly address: string
  readonly port: number
}

export type PeerState = 'unknown' | 'alive' | 'dead'

export interface PeerHooks {
  /** Called on each change of state (never with 'unknown'). */
  transition(peer: PeerProber, state: 'alive' | 'dead', reason: string): void
  probed(peer: PeerProber, ok: boolean): void
}

/** GET /healthz; resolves with null on a 2xx answer, else with why it failed. */
export function probeHealthz(
  address: string,
  port: number,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<string | null> {
  return new Promise((resolve) => {
    let done = false
    const finish = (why: string | null) => {
      if (done) return
      done = true
      clearTimeout(timer)
      resolve(why)
    }
    const req = request(
      {
        host: address,
        port,
        path: '/healthz',
        method: 'GET',
        agent: false,
        signal,
        headers: { 'user-agent': 'meshlet-membership' },
      },
      (res) => {
        res.resume()
        const code = res.statusCode ?? 0
        finish(code >= 200 && code < 300 ? null : `HTTP ${code}`)
      },
    )
    const timer = setTimeout(() => {
      finish(`no answer in ${timeoutMs} ms`)
      req.destroy()
    }, timeoutMs)
    req.on('error', (err: NodeJS.ErrnoException) => finish(err.code ?? err.message))
    req.end()
  })
}

export class PeerProber {
  readonly target: PeerTarget
  readonly url: string
  #hooks: PeerHooks
  #state: PeerState = 'unknown'
  #failures = 0
  #lastError: string | null = null
  #changedAt: number | null = null
  #timer: NodeJS.Timeout | null = null
  #abort = new AbortController()
  #stopped = false

  constructor(target: PeerTarget, hooks: PeerHooks) {
    this.target = target
    this.url = `http://${target.address.includes(':') ? `[${target.address}]` : target.address}:${target.port}/healthz`
    this.#hooks = hooks
  }

  get state(): PeerState {
    return this.#state
  }

  start(): void {
    this.#schedule(0)
  }

  stop(): void {
    this.#stopped = true
    if (this.#timer) clearTimeout(this.#timer)
    this.#timer = null
    this.#abort.abort()
  }

  #schedule(delayMs: number): void {
    if (this.#stopped) return
    this.#timer = setTimeout(() => void this.#probe(), delayMs)
    this.#timer.unref()
  }

  async #probe(): Promise<void> {
    const started = Date.now()
    const why = await probeHealthz(this.target.address, this.target.port, PROBE_TIMEOUT_MS, this.#abort.signal)
    if (this.#stopped) return
    this.#hooks.probed(this, why === null)
    if (why === null) {
      this.#failures = 0
      this.#lastError = null
      if (this.#state !== 'alive') this.#set('alive', 'healthz answered')
    } else {
      this.#failures++
      this.#lastError = why
      if (this.#failures >= FAILURE_THRESHOLD && this.#state !== 'dead') {
        this.#set('dead', `${this.#failures} probes failed in a row, last: ${why}`)
      }
    }
    this.#schedule(Math.max(0, started + PROBE_INTERVAL_MS - Date.now()))
  }

  #set(state: 'alive' | 'dead', reason: string): void {
    this.#state = state
    this.#changedAt = Date.now()
    this.#hooks.transition(this, state, reason)
  }

  status() {
    return {
      node: this.target.node,
      url: this.url,
      state: this.#state,
      consecutiveFailures: this.#failures,
      lastError: this.#lastError,
      since: this.#changedAt === null ? null : new Date(this.#changedAt).toISOString(),
    }
  }
}
