// Starts a real `meshlet up` child process for integration tests: every listener on 127.0.0.1 port 0 unless the
// test says otherwise, addresses read from the "listening" log lines, ready when /readyz answers 200.

import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import type { StatusJson } from './status.ts'

export const MESHLET_BIN = fileURLToPath(new URL('../../bin/meshlet.ts', import.meta.url))

// As root, --l4-mode auto would pick nftables in the host's network namespace, where parallel test processes would
// replace each other's table: every meshlet a test starts (here or with MESHLET_BIN) inherits userspace unless the
// test passes --l4-mode (test/lb/l4-modes.test.ts does, in namespaces of its own).
process.env.MESHLET_L4_MODE ??= 'userspace'

export interface Address {
  readonly host: string
  readonly port: number
}

export interface MeshletProcess {
  readonly proc: ChildProcess
  /** Directory holding the manifests given as text (watched by meshlet). */
  readonly dir: string
  readonly admin: Address | null
  readonly dns: Address | null
  readonly http: Address | null
  readonly https: Address | null
  /** Every JSON log line so far. */
  readonly logs: Record<string, unknown>[]
  status(): Promise<StatusJson>
  metrics(): Promise<string>
  /** Writes (or replaces) a manifest in `dir`; meshlet's watcher picks it up. */
  writeManifest(name: string, text: string): void
  /** Resolves when a log line matching `pred` has been seen (past lines included). */
  waitForLog(pred: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>
  /** Polls /status until `pred` returns true. */
  waitForStatus(pred: (status: StatusJson) => boolean, timeoutMs?: number): Promise<StatusJson>
  /** Sends SIGTERM (or `signal`) and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>
}

export interface StartOptions {
  /** file name → YAML text, written into a fresh temp dir that is passed as -f DIR. */
  readonly manifests?: Readonly<Record<string, string>>
  /** Extra -f paths. */
  readonly files?: readonly string[]
  /** Extra flags; a flag given here replaces the default for it. */
  readonly args?: readonly string[]
  readonly env?: NodeJS.ProcessEnv
  readonly readyTimeoutMs?: number
  /** Default true: wait for /readyz 200 (needs the admin listener). */
  readonly waitReady?: boolean
  /** Command prefix, e.g. ['ip', 'netns', 'exec', 'ns1'] to run meshlet inside a namespace. */
  readonly wrap?: readonly string[]
}

interface Teardown {
  teardown(fn: () => unknown): void
}

/** A /16 of 127/8 per process, so parallel tests never bind the same ClusterIP. */
function randomServiceCidr(): string {
  return `127.${100 + Math.floor(Math.random() * 100)}.0.0/16`
}

function withDefaults(args: readonly string[]): string[] {
  const defaults: Record<string, string> = {
    '--dns': '127.0.0.1:0',
    '--http': '127.0.0.1:0',
    '--https': '127.0.0.1:0',
    '--admin': '127.0.0.1:0',
    // Never the machine's resolver: port 1 on loopback refuses at once.
    '--upstream': '127.0.0.1:1',
    '--discovery-resolver': '127.0.0.1:1',
    '--node': 'test-node',
    '--service-cidr': randomServiceCidr(),
    '--log-level': 'info',
    // One proxy thread, today's path, unless a test asks for --workers (the CLI default is one per core).
    '--workers': '1',
  }
  const out = [...args]
  for (const [flag, value] of Object.entries(defaults)) if (!args.includes(flag)) out.push(flag, value)
  return out
}

/**
 * How long a start may take before a test fails: on a quiet machine meshlet listens within 1-3 s, but on a loaded
 * 2-core runner (seven concurrent test processes) starts of 20-30 s were seen, and those failures said nothing.
 */
const START_TIMEOUT_MS = 45_000

export async function startMeshlet(t: Teardown, opts: StartOptions = {}): Promise<MeshletProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'meshlet-test-'))
  const files: string[] = []
  if (opts.manifests) {
    for (const [name, text] of Object.entries(opts.manifests)) writeFileSync(join(dir, name), text)
    files.push(dir)
  }
  files.push(...(opts.files ?? []))
  const args = ['up', ...files.flatMap((f) => ['-f', f]), ...withDefaults(opts.args ?? [])]
  const cmd = [...(opts.wrap ?? []), process.execPath, MESHLET_BIN, ...args]
  const proc = spawn(cmd[0]!, cmd.slice(1), { env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] })
  const logs: Record<string, unknown>[] = []
  const waiters: { pred: (l: Record<string, unknown>) => boolean; resolve: (l: Record<string, unknown>) => void }[] = []
  let stderr = ''
  let exited: number | null | undefined
  const exitPromise = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve((exited = code))))
  let buf = ''
  proc.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    buf += chunk
    let i
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i)
      buf = buf.slice(i + 1)
      let parsed: Record<string, unknown>
      try {
        parsed = JSON.parse(line)
      } catch {
        continue
      }
      logs.push(parsed)
      for (let w = waiters.length - 1; w >= 0; w--) {
        if (waiters[w]!.pred(parsed)) waiters.splice(w, 1)[0]!.resolve(parsed)
      }
    }
  })
  proc.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c))

  const waitForLog = (pred: (l: Record<string, unknown>) => boolean, timeoutMs = 15000) => {
    const seen = logs.find(pred)
    if (seen) return Promise.resolve(seen)
    return new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`log line not seen in ${timeoutMs} ms; stderr: ${stderr}`)),
        timeoutMs,
      )
      waiters.push({ pred, resolve: (l) => (clearTimeout(timer), resolve(l)) })
      // exitPromise only ever resolves (with the exit code), so this chain cannot reject unhandled.
      void exitPromise.then((code) =>
        reject(new Error(`meshlet exited (${code}) before the log line; stderr: ${stderr}`)),
      )
    })
  }

  let stopped = false
  const stop = async (signal: NodeJS.Signals = 'SIGTERM') => {
    if (!stopped) {
      stopped = true
      if (exited === undefined) proc.kill(signal)
      const timer = setTimeout(() => proc.kill('SIGKILL'), 15000)
      const code = await exitPromise
      clearTimeout(timer)
      return code
    }
    return exitPromise
  }
  t.teardown(async () => {
    await stop()
    rmSync(dir, { recursive: true, force: true })
  })

  const flag = (name: string) => {
    const all = opts.args ?? []
    const i = all.lastIndexOf(name)
    return i >= 0 ? all[i + 1] : undefined
  }
  const listenerAddress = async (name: string): Promise<Address | null> => {
    if (flag(`--${name}`) === 'off') return null
    const line = await waitForLog(
      (l) => l.msg === 'listening' && l.listener === name,
      opts.readyTimeoutMs ?? START_TIMEOUT_MS,
    )
    return { host: String(line.address), port: Number(line.port) }
  }
  const admin = await listenerAddress('admin')
  const adminUrl = (path: string) => `http://${admin!.host}:${admin!.port}${path}`

  const status = async (): Promise<StatusJson> => {
    const res = await fetch(adminUrl('/status'))
    return (await res.json()) as StatusJson
  }
  const waitForStatus = async (pred: (s: StatusJson) => boolean, timeoutMs = 15000) => {
    const until = Date.now() + timeoutMs
    let last: StatusJson | undefined
    while (Date.now() < until) {
      last = await status()
      if (pred(last)) return last
      await sleep(50)
    }
    throw new Error(`status condition not met in ${timeoutMs} ms; last status: ${JSON.stringify(last).slice(0, 2000)}`)
  }

  if (opts.waitReady !== false && admin) {
    const until = Date.now() + (opts.readyTimeoutMs ?? START_TIMEOUT_MS)
    for (;;) {
      if (exited !== undefined) throw new Error(`meshlet exited (${exited}); stderr: ${stderr}`)
      let readyz = 'not listening'
      try {
        const res = await fetch(adminUrl('/readyz'))
        readyz = `${res.status} ${await res.text()}`
        if (res.status === 200) break
      } catch {
        // not listening yet
      }
      if (Date.now() > until) throw new Error(`meshlet not ready in time; /readyz: ${readyz}; stderr: ${stderr}`)
      await sleep(50)
    }
  }
  const [dns, http, https] = await Promise.all([
    listenerAddress('dns'),
    listenerAddress('http'),
    listenerAddress('https'),
  ])
  return {
    proc,
    dir,
    admin,
    dns,
    http,
    https,
    logs,
    status,
    metrics: async () => (await fetch(adminUrl('/metrics'))).text(),
    writeManifest: (name, text) => writeFileSync(join(dir, name), text),
    waitForLog,
    waitForStatus,
    stop,
  }
}
