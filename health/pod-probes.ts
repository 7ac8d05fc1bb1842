// The probes of one Pod: builds a worker per (container, probe kind), turns worker states into the Pod's verdict
// (specs/l4-health.md §6.3-6.4) and performs the virtual restart that stands in for kubelet's container restart.
//
//   started(c) = no startup probe, or it succeeded (a terminating Pod counts as started: startup stops with Success)
//   ready(c)   = started(c) and (readiness succeeded, or there is no readiness probe and the container is not
//                waiting for its first live sign after a virtual restart)
//   Pod ready  = every container ready; Pod started = every container started

import type { Logger } from 'pino'
import type { Container, Pod, Probe } from '../model/objects.ts'
import { probeVerdict } from '../model/diagnostics.ts'
import type { PodHealth } from '../model/snapshot.ts'
import type { HealthMetrics } from './metrics.ts'
import { ProbeWorker, type ProbeFn, type ProbeKind, type WorkerOwner } from './probe-worker.ts'
import { failure, type ProbeOutcome } from './handlers/outcome.ts'
import { HttpProbe } from './handlers/http.ts'
import { probeTcp } from './handlers/tcp.ts'
import { expandCommand, runCommand } from './handlers/exec.ts'
import { healthCheckRequest, probeGrpc } from './handlers/grpc.ts'

/** What a Pod's probes need from the plane. */
export interface PodProbesEnv {
  readonly log: Logger
  readonly metrics: HealthMetrics
  readonly execPrefix: string | null
  readonly onLivenessFailure: string | null
  /** Writes the verdict (the Store ignores unchanged ones). */
  publish(podKey: string, health: PodHealth): void
  /** A readiness probe of this Pod passed (passive ejection un-ejects on it). */
  readinessPassed(podKey: string): void
}

interface ContainerProbes {
  readonly name: string
  readiness: ProbeWorker | null
  liveness: ProbeWorker | null
  startup: ProbeWorker | null
  /** After a virtual restart, a container with no readiness probe waits for one passing liveness probe. */
  awaitingLife: boolean
}

const KINDS: readonly ProbeKind[] = ['startup', 'readiness', 'liveness']
/** --on-liveness-failure gets this long before it is killed. */
const HOOK_TIMEOUT_MS = 30_000

export function podHasProbes(pod: Pod): boolean {
  return pod.spec.containers.some(
    (c) => c.readinessProbe !== null || c.livenessProbe !== null || c.startupProbe !== null,
  )
}

function probeOf(c: Container, kind: ProbeKind): Probe | null {
  return kind === 'readiness' ? c.readinessProbe : kind === 'liveness' ? c.livenessProbe : c.startupProbe
}

export class PodProbes implements WorkerOwner {
  readonly key: string
  #pod: Pod
  readonly #env: PodProbesEnv
  readonly #log: Logger
  readonly #containers = new Map<string, ContainerProbes>()
  #containerStartedAt = Date.now()
  #restartCount = 0
  #lastRestart: { at: string; reason: string } | null = null
  #ready = false
  #stopped = false

  constructor(key: string, pod: Pod, env: PodProbesEnv) {
    this.key = key
    this.#pod = pod
    this.#env = env
    this.#log = env.log.child({ pod: key })
  }

  get pod(): Pod {
    return this.#pod
  }

  get containerStartedAt(): number {
    return this.#containerStartedAt
  }

  get workerCount(): number {
    let n = 0
    for (const c of this.#containers.values()) n += (c.readiness ? 1 : 0) + (c.liveness ? 1 : 0) + (c.startup ? 1 : 0)
    return n
  }

  /**
   * Applies the Pod as the Snapshot now has it: starts missing workers, replaces those whose probe (or target)
   * changed and stops those that went away. Unchanged workers keep their state and schedule.
   */
  update(pod: Pod): void {
    this.#pod = pod
    const terminating = pod.meta.deletionTimestamp !== null
    const seen = new Set<string>()
    const started: ProbeWorker[] = []
    for (const c of pod.spec.containers) {
      seen.add(c.name)
      let cp = this.#containers.get(c.name)
      if (!cp)
        this.#containers.set(
          c.name,
          (cp = { name: c.name, readiness: null, liveness: null, startup: null, awaitingLife: false }),
        )
      for (const kind of KINDS) {
        // A terminating Pod's liveness and startup stop with Success; readiness keeps running (spec §6.4).
        const probe = terminating && kind !== 'readiness' ? null : probeOf(c, kind)
        const old = cp[kind]
        const fingerprint = probe ? JSON.stringify([probe, pod.status.podIP, this.#env.execPrefix]) : ''
        if (old && old.fingerprint === fingerprint) continue
        if (old) {
          old.stop()
          this.#log.info(
            { container: c.name, probe: kind },
            probe ? 'probe changed: worker restarted' : 'probe removed',
          )
        }
        cp[kind] = probe
          ? new ProbeWorker(kind, c.name, probe, fingerprint, this.#probeFn(c, probe), this, this.#env.metrics)
          : null
        if (cp[kind]) started.push(cp[kind])
      }
    }
    for (const [name, cp] of this.#containers) {
      if (seen.has(name)) continue
      for (const kind of KINDS) cp[kind]?.stop()
      this.#containers.delete(name)
    }
    this.#publish()
    for (const w of started) w.start()
  }

  stop(): void {
    this.#stopped = true
    for (const cp of this.#containers.values()) for (const kind of KINDS) cp[kind]?.stop()
  }

  isStarted(container: string): boolean {
    const cp = this.#containers.get(container)
    if (!cp || this.#pod.meta.deletionTimestamp !== null) return true
    return cp.startup === null || cp.startup.state === 'success'
  }

  onResult(worker: ProbeWorker, outcome: ProbeOutcome, changed: boolean): void {
    if (this.#stopped) return
    const cp = this.#containers.get(worker.container)
    if (!cp) return
    if (changed) {
      this.#log.info(
        {
          container: worker.container,
          probe: worker.kind,
          type: worker.probe.handler.type,
          state: worker.state,
          reason: outcome.message || undefined,
        },
        `${worker.kind} probe ${worker.state === 'success' ? 'succeeded' : 'failed'}`,
      )
      if (probeVerdict.hasSubscribers) publishVerdict(this.key, worker)
    }
    if (worker.kind === 'readiness' && outcome.ok) this.#env.readinessPassed(this.key)
    if (worker.kind === 'liveness' && outcome.ok && cp.awaitingLife) {
      cp.awaitingLife = false
      changed = true
    }
    if (changed && worker.state === 'failure' && worker.kind !== 'readiness') {
      this.#virtualRestart(worker, outcome)
      return
    }
    if (changed && worker.kind === 'startup' && worker.state === 'success') {
      // kubelet's UpdatePodStatus: a started-but-not-ready container gets a readiness probe at once.
      cp.readiness?.trigger()
    }
    if (changed) this.#publish()
  }

  /** kubelet would restart the container; meshlet takes the endpoint out and probes as after a restart (spec §6.4). */
  #virtualRestart(worker: ProbeWorker, outcome: ProbeOutcome): void {
    this.#restartCount++
    const reason = `${worker.kind} probe failed: ${outcome.message || 'failure'}`
    this.#lastRestart = { at: new Date().toISOString(), reason }
    this.#env.metrics.restarts.inc({ reason: worker.kind })
    this.#log.info(
      { container: worker.container, restartCount: this.#restartCount, reason },
      'virtual restart: endpoint out, probes start over',
    )
    this.#containerStartedAt = Date.now()
    for (const cp of this.#containers.values()) {
      for (const kind of KINDS) cp[kind]?.reset()
      cp.awaitingLife = cp.readiness === null && cp.liveness !== null
    }
    this.#publish(reason)
    if (this.#env.onLivenessFailure) this.#runHook(this.#env.onLivenessFailure, worker.container)
  }

  #runHook(template: string, container: string): void {
    const argv = expandCommand(template, this.#placeholders(container))
    const env = {
      ...process.env,
      MESHLET_POD: this.#pod.meta.name,
      MESHLET_NAMESPACE: this.#pod.meta.namespace,
      MESHLET_POD_IP: this.#pod.status.podIP ?? '',
      MESHLET_CONTAINER: container,
      MESHLET_RESTART_COUNT: String(this.#restartCount),
    }
    void runCommand(argv, HOOK_TIMEOUT_MS, env).then((r) => {
      if (r.ok) this.#log.info({ container, command: argv }, 'on-liveness-failure command succeeded')
      else this.#log.warn({ container, command: argv, reason: r.message }, 'on-liveness-failure command failed')
    })
  }

  #placeholders(container: string) {
    return {
      pod: this.#pod.meta.name,
      namespace: this.#pod.meta.namespace,
      ip: this.#pod.status.podIP ?? '',
      container,
    }
  }

  #probeFn(c: Container, probe: Probe): ProbeFn {
    const h = probe.handler
    const podIP = this.#pod.status.podIP
    switch (h.type) {
      case 'httpGet': {
        const host = h.host ?? podIP
        if (host === null) return noPodIp
        const p = new HttpProbe({ scheme: h.scheme, host, port: h.port, path: h.path, httpHeaders: h.httpHeaders })
        return (ms) => p.run(ms)
      }
      case 'tcpSocket': {
        const host = h.host ?? podIP
        if (host === null) return noPodIp
        const port = h.port
        return (ms) => probeTcp(host, port, ms)
      }
      case 'grpc': {
        if (podIP === null) return noPodIp
        const req = healthCheckRequest(h.service)
        const port = h.port
        return (ms) => probeGrpc(podIP, port, req, ms)
      }
      case 'exec': {
        const prefix = this.#env.execPrefix ? expandCommand(this.#env.execPrefix, this.#placeholders(c.name)) : []
        const argv = [...prefix, ...h.command]
        return (ms) => runCommand(argv, ms)
      }
      default: {
        const never: never = h
        throw new Error(`unhandled probe handler ${(never as { type: string }).type}`)
      }
    }
  }

  /** The Pod's verdict from its workers; published on every change (the Store drops unchanged ones). */
  verdict(reason: string | null = null): PodHealth {
    let ready = true
    let started = true
    let why = reason
    for (const cp of this.#containers.values()) {
      const s = this.isStarted(cp.name)
      if (!s) {
        started = false
        ready = false
        why ??= `container ${cp.name}: startup probe has not succeeded`
        continue
      }
      if (cp.readiness ? cp.readiness.state !== 'success' : cp.awaitingLife) {
        ready = false
        why ??= cp.readiness
          ? `container ${cp.name}: readiness probe ${cp.readiness.state === 'failure' ? 'failing' : 'pending'}`
          : `container ${cp.name}: waiting for liveness after restart`
      }
    }
    return { ready, started, restartCount: this.#restartCount, reason: ready ? null : why }
  }

  #publish(reason: string | null = null): void {
    const v = this.verdict(reason)
    if (v.ready !== this.#ready) {
      this.#ready = v.ready
      this.#log.info({ ready: v.ready, reason: v.reason ?? undefined }, v.ready ? 'pod ready' : 'pod not ready')
    }
    this.#env.publish(this.key, v)
  }

  status() {
    const v = this.verdict()
    return {
      pod: this.key,
      ip: this.#pod.status.podIP,
      ready: v.ready,
      started: v.started,
      reason: v.reason,
      restartCount: this.#restartCount,
      lastRestart: this.#lastRestart,
      containerStartedAt: new Date(this.#containerStartedAt).toISOString(),
      containers: [...this.#containers.values()].map((cp) => ({
        name: cp.name,
        started: this.isStarted(cp.name),
        awaitingLife: cp.awaitingLife,
        probes: KINDS.flatMap((k) => (cp[k] ? [cp[k].status()] : [])),
      })),
    }
  }
}

/** diagnostics_channel `meshlet:health:probe-verdict`: called only when someone subscribes. */
function publishVerdict(pod: string, worker: ProbeWorker): void {
  const t = worker.lastTransition
  if (t === null) return
  probeVerdict.publish({
    pod,
    container: worker.container,
    kind: worker.kind,
    from: t.from,
    to: t.to,
    reason: t.reason,
  })
}

const noPodIp: ProbeFn = () =>
  Promise.resolve(failure('the Pod has no status.podIP and the probe names no host', 'MLT_HEALTH_NO_POD_IP'))
