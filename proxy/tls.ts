// TLS for the https listener: certificates from kubernetes.io/tls Secrets chosen by SNI (exact host, then one-label
// wildcard, then the default certificate; spec §1.8.2), and a self-signed default certificate generated at start so
// the listener is up before any Secret exists — ingress-nginx's "Fake Certificate". It is made with the openssl
// command line (installed everywhere meshlet runs; no extra npm dependency).

import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createSecureContext, type SecureContext } from 'node:tls'
import { runChecked } from '../model/child-process.ts'
import { ProxyError } from './errors.ts'

export interface PemPair {
  readonly cert: string
  readonly key: string
}

/** Generates a self-signed P-256 certificate for CN "meshlet default certificate" (valid 10 years). */
export async function generateSelfSigned(): Promise<PemPair> {
  const dir = await mkdtemp(join(tmpdir(), 'meshlet-cert-'))
  try {
    const keyFile = join(dir, 'key.pem')
    const certFile = join(dir, 'cert.pem')
    const argv = [
      'openssl',
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      keyFile,
      '-out',
      certFile,
      '-days',
      '3650',
      '-subj',
      '/O=meshlet/CN=meshlet default certificate',
    ]
    try {
      await runChecked(argv, { timeoutMs: 20000 })
    } catch (err) {
      throw new ProxyError('MLT_PROXY_CERT', `openssl: ${(err as Error).message}`, { cause: err })
    }
    return { cert: await readFile(certFile, 'utf8'), key: await readFile(keyFile, 'utf8') }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

/** SNI lookup structure, rebuilt with each route table. */
export interface TlsIndex {
  readonly exact: ReadonlyMap<string, SecureContext>
  /** Key: the part after "*." */
  readonly wild: ReadonlyMap<string, SecureContext>
  /** From a `tls` entry without hosts; null: the generated default. */
  readonly fallback: SecureContext | null
  /** host (or "*.suffix") → "namespace/secret", for /status. */
  readonly hosts: Readonly<Record<string, string>>
}

export const EMPTY_TLS: TlsIndex = { exact: new Map(), wild: new Map(), fallback: null, hosts: {} }

/** SecureContexts are costly to build (key parsing); they are cached by Secret key and content across Snapshots. */
export class SecureContextCache {
  #cache = new Map<string, { cert: string; key: string; ctx: SecureContext }>()

  /** Throws when the PEM does not load. */
  get(secretKey: string, pem: PemPair): SecureContext {
    const hit = this.#cache.get(secretKey)
    if (hit && hit.cert === pem.cert && hit.key === pem.key) return hit.ctx
    const ctx = createSecureContext({ cert: pem.cert, key: pem.key, minVersion: 'TLSv1.2' })
    this.#cache.set(secretKey, { cert: pem.cert, key: pem.key, ctx })
    return ctx
  }

  /** Forgets the Secrets not in `keep` (those the current route table reads). */
  sweep(keep: ReadonlySet<string>): void {
    for (const k of this.#cache.keys()) if (!keep.has(k)) this.#cache.delete(k)
  }
}

/** SNI choice: exact host, then a one-label wildcard, then the index's default, else null (the generated one). */
export function pickContext(index: TlsIndex, servername: string): SecureContext | null {
  const name = servername.toLowerCase()
  const exact = index.exact.get(name)
  if (exact) return exact
  const dot = name.indexOf('.')
  if (dot > 0) {
    const wild = index.wild.get(name.slice(dot + 1))
    if (wild) return wild
  }
  return index.fallback
}
