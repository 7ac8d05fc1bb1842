// diagnostics_channel events for the moments people debug, as undici publishes `undici:request:create` and friends:
// a subscriber (an APM agent, a test, `node --import` a script that prints them) sees them without a log level
// change, and nobody pays when nobody subscribes. Publishers check `hasSubscribers` before building a message, so a
// message object is allocated only for a listener, and hot paths cost one property read.
//
//   import { subscribe } from 'node:diagnostics_channel'
//   subscribe('meshlet:health:probe-verdict', (m) => console.log(m))
//
// Messages are plain data; names follow `meshlet:<component>:<event>`. Channels live here, in model/, because every
// component may publish and planes never import each other. ARCHITECTURE.md ("Diagnostics channels") lists who
// publishes what.

import { channel } from 'node:diagnostics_channel'

/** The part of node:diagnostics_channel's Channel a publisher uses, typed by its message. */
export interface DiagnosticsChannel<M> {
  readonly name: string | symbol
  readonly hasSubscribers: boolean
  publish(message: M): void
}

/** A plane has applied a Snapshot (its index swapped): `version` is Snapshot.version. */
export interface SnapshotAppliedMessage {
  readonly component: string
  readonly version: number
  /** Time to build the plane's index from the Snapshot, in seconds. */
  readonly durationSeconds: number
}

/** A listener opened (after bind) or failed to open; `error` is set when it failed. */
export interface ListenerMessage {
  readonly component: string
  /** The listener's name as in the `listening` log line (dns, http, https, admin), or "PROTOCOL|address|port" for lb. */
  readonly listener: string
  readonly address: string
  readonly port: number
  readonly error: Error | null
}

/** A connection to an endpoint (upstream) failed before any byte was exchanged. */
export interface UpstreamConnectErrorMessage {
  readonly component: string
  /** "namespace/name" of the Service. */
  readonly service: string
  readonly address: string
  readonly port: number
  readonly error: Error
}

/** A probe's verdict changed after its threshold (kubelet's transition), not each probe result. */
export interface ProbeVerdictMessage {
  /** "namespace/name" of the Pod. */
  readonly pod: string
  readonly container: string
  readonly kind: 'readiness' | 'liveness' | 'startup'
  readonly from: 'success' | 'failure' | 'unknown'
  readonly to: 'success' | 'failure' | 'unknown'
  readonly reason: string
}

export const snapshotApplied: DiagnosticsChannel<SnapshotAppliedMessage> = channel('meshlet:snapshot:applied')
export const listenerOpened: DiagnosticsChannel<ListenerMessage> = channel('meshlet:listener:opened')
export const listenerFailed: DiagnosticsChannel<ListenerMessage> = channel('meshlet:listener:failed')
export const upstreamConnectError: DiagnosticsChannel<UpstreamConnectErrorMessage> = channel(
  'meshlet:upstream:connect-error',
)
export const probeVerdict: DiagnosticsChannel<ProbeVerdictMessage> = channel('meshlet:health:probe-verdict')

// Publishing helpers: one call at each site, nothing allocated (no message object) while nobody subscribes.

/** `meshlet:listener:opened` when `error` is null, else `meshlet:listener:failed`. */
export function publishListener(
  component: string,
  listener: string,
  address: string,
  port: number,
  error: Error | null,
): void {
  const ch = error === null ? listenerOpened : listenerFailed
  if (ch.hasSubscribers) ch.publish({ component, listener, address, port, error })
}

/** `meshlet:snapshot:applied`; `started` is performance.now() when the plane began applying. */
export function publishApplied(component: string, version: number, started: number): void {
  if (snapshotApplied.hasSubscribers)
    snapshotApplied.publish({ component, version, durationSeconds: (performance.now() - started) / 1000 })
}

/** `meshlet:upstream:connect-error`; `error` is made only for a subscriber when the caller has none (a code). */
export function publishConnectError(
  component: string,
  service: string,
  address: string,
  port: number,
  error: Error | string,
): void {
  if (upstreamConnectError.hasSubscribers)
    upstreamConnectError.publish({
      component,
      service,
      address,
      port,
      error: typeof error === 'string' ? new Error(error) : error,
    })
}
