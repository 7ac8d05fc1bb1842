// The etcd connection: `--store etcd://HOST:PORT[,HOST:PORT…]` and the TLS flags → one etcd3 client. etcd3 (the
// maintained v3 gRPC client for Node) balances calls over the endpoints and retries on another member when one fails;
// its watch manager reconnects on its own and resumes each watcher from the revision it last saw.

import { readFileSync } from 'node:fs'
import { isIP } from 'node:net'
import { Etcd3 } from 'etcd3'
import { StoreError } from './errors.ts'
import type { EtcdOptions } from '../model/options.ts'

/** "etcd://h1:2379,h2:2379" → ["h1:2379", "h2:2379"]; throws MLT_STORE_OPTION for anything else. */
export function parseStoreUrl(value: string): string[] {
  const m = /^etcd:\/\/(.+)$/.exec(value)
  if (!m)
    throw new StoreError(
      'MLT_STORE_OPTION',
      `--store: expected file or etcd://HOST:PORT[,HOST:PORT...], got "${value}"`,
    )
  const endpoints = m[1]!.split(',').map((s) => s.trim())
  for (const e of endpoints) {
    const hp = /^\[([^\]]+)\]:(\d+)$/.exec(e) ?? /^([^:]+):(\d+)$/.exec(e)
    const host = hp?.[1] ?? ''
    const port = Number(hp?.[2])
    const hostOk = isIP(host) !== 0 || /^[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?$/.test(host)
    if (!hp || !hostOk || !Number.isInteger(port) || port < 1 || port > 65535)
      throw new StoreError('MLT_STORE_OPTION', `--store: "${e}" is not HOST:PORT`)
  }
  return endpoints
}

/** "/meshlet/" or "meshlet" → "/meshlet". */
export function normalizePrefix(value: string): string {
  const p = '/' + value.replace(/^\/+|\/+$/g, '')
  if (p === '/') throw new StoreError('MLT_STORE_OPTION', '--etcd-prefix: must not be empty or "/"')
  return p
}

function pem(flag: string, path: string | null): Buffer | undefined {
  if (path === null) return undefined
  try {
    return readFileSync(path)
  } catch (err) {
    throw new StoreError('MLT_STORE_OPTION', `--${flag}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code}`, {
      cause: err,
    })
  }
}

/** The watch manager's reconnect delays: 100 ms doubling to 1 s (etcd3 never resets it, so the cap is what counts). */
interface Backoff {
  readonly duration: number
  next(): Backoff
}
const backoff = (ms: number): Backoff => ({ duration: ms, next: () => backoff(Math.min(ms * 2, 1000)) })

/**
 * Calls give up after `callTimeoutMs` (a node must notice an unreachable etcd in seconds, not after gRPC's default of
 * never); the watch reconnects with a backoff capped at 1 s so that a node catches up soon after etcd returns.
 */
export function connect(opts: EtcdOptions, callTimeoutMs = 2000): Etcd3 {
  if ((opts.cert === null) !== (opts.key === null))
    throw new StoreError('MLT_STORE_OPTION', '--etcd-cert and --etcd-key go together')
  const tls = opts.cacert !== null || opts.cert !== null
  const rootCertificate = pem('etcd-cacert', opts.cacert)
  const certChain = pem('etcd-cert', opts.cert)
  const privateKey = pem('etcd-key', opts.key)
  return new Etcd3({
    hosts: opts.endpoints.map((e) => `${tls ? 'https' : 'http'}://${e}`),
    ...(tls
      ? {
          credentials: {
            // Without --etcd-cacert the system's roots verify the server (grpc's default for an empty buffer).
            rootCertificate: rootCertificate ?? Buffer.alloc(0),
            ...(certChain ? { certChain } : {}),
            ...(privateKey ? { privateKey } : {}),
          },
        }
      : {}),
    dialTimeout: callTimeoutMs,
    // A watch stream to a member that vanished without a reset (a partition) is noticed by a ping that gets no
    // answer; 10 s stays above etcd's default --grpc-keepalive-min-time (5 s), below which it drops the connection.
    grpcOptions: { 'grpc.keepalive_time_ms': 10_000, 'grpc.keepalive_timeout_ms': 3000 },
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + callTimeoutMs }),
    faultHandling: { watchBackoff: backoff(100) },
  })
}
