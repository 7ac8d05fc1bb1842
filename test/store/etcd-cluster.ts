// A real 3-member etcd cluster for tests: own data directories in a temp dir, members on fixed ports (each test file
// picks its own base below 32768), each member startable and stoppable on its own. Everything is killed and removed
// in teardown. `wrap` runs the members inside a network namespace (ip netns exec NS).

import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { exec } from '../helpers/netns.ts'

export const ETCD_BIN = '/usr/bin/etcd'
export const ETCDCTL_BIN = '/usr/bin/etcdctl'

/** Why etcd tests cannot run here (null: they can). */
export function etcdMissing(): string | null {
  return existsSync(ETCD_BIN) && existsSync(ETCDCTL_BIN)
    ? null
    : 'needs etcd and etcdctl (Debian etcd-server, etcd-client; .ci/run installs them)'
}

export interface EtcdCluster {
  /** "host:port" of each member's client URL. */
  readonly endpoints: readonly string[]
  /** etcd://… for --store. */
  readonly url: string
  stop(i: number, signal?: NodeJS.Signals): Promise<void>
  start(i: number): Promise<void>
  /** etcdctl against the cluster (or one member); resolves with stdout, rejects on a non-zero exit. */
  ctl(args: readonly string[], member?: number): Promise<string>
}

interface Teardown {
  teardown(fn: () => unknown): void
}

const START_TIMEOUT_MS = 20_000

export async function startEtcdCluster(
  t: Teardown,
  opts: { basePort: number; host?: string; wrap?: readonly string[] },
): Promise<EtcdCluster> {
  const host = opts.host ?? '127.0.0.1'
  const dir = mkdtempSync(join(tmpdir(), 'meshlet-etcd-'))
  const clientPort = (i: number) => opts.basePort + 1 + i
  const peerPort = (i: number) => opts.basePort + 11 + i
  const endpoints = [0, 1, 2].map((i) => `${host}:${clientPort(i)}`)
  const initialCluster = [0, 1, 2].map((i) => `m${i}=http://${host}:${peerPort(i)}`).join(',')
  const procs: (ChildProcess | null)[] = [null, null, null]
  const exits: (Promise<void> | null)[] = [null, null, null]

  const launch = (i: number) => {
    const args = [
      ETCD_BIN,
      '--name',
      `m${i}`,
      '--data-dir',
      join(dir, `m${i}`),
      '--listen-client-urls',
      `http://${endpoints[i]}`,
      '--advertise-client-urls',
      `http://${endpoints[i]}`,
      '--listen-peer-urls',
      `http://${host}:${peerPort(i)}`,
      '--initial-advertise-peer-urls',
      `http://${host}:${peerPort(i)}`,
      '--initial-cluster',
      initialCluster,
      '--initial-cluster-state',
      'new',
      '--initial-cluster-token',
      `meshlet-test-${process.pid}`,
      '--logger',
      'zap',
      '--log-level',
      'error',
    ]
    const cmd = [...(opts.wrap ?? []), ...args]
    const p = spawn(cmd[0]!, cmd.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] })
    p.stderr!.resume()
    procs[i] = p
    exits[i] = new Promise((resolve) => p.on('exit', () => resolve()))
  }

  const ctl = async (args: readonly string[], member?: number) => {
    const eps = member === undefined ? endpoints.join(',') : endpoints[member]!
    const r = await exec(
      [...(opts.wrap ?? []), ETCDCTL_BIN, `--endpoints=${eps}`, '--dial-timeout=1s', '--command-timeout=3s', ...args],
      8000,
    )
    if (r.code !== 0) throw new Error(`etcdctl ${args.join(' ')}: ${r.stderr}`)
    return r.stdout
  }

  const healthy = async (members: readonly number[]) => {
    const end = Date.now() + START_TIMEOUT_MS
    for (;;) {
      const ok = await Promise.all(
        members.map((m) =>
          ctl(['endpoint', 'health'], m).then(
            () => true,
            () => false,
          ),
        ),
      )
      if (ok.every(Boolean)) return
      if (Date.now() > end) throw new Error(`etcd members ${members.join(',')} not healthy in ${START_TIMEOUT_MS} ms`)
      await sleep(100)
    }
  }

  const stop = async (i: number, signal: NodeJS.Signals = 'SIGKILL') => {
    const p = procs[i]
    if (!p || p.exitCode !== null || p.signalCode !== null) return
    p.kill(signal)
    await exits[i]
    procs[i] = null
  }

  t.teardown(async () => {
    for (const i of [0, 1, 2]) await stop(i)
    rmSync(dir, { recursive: true, force: true })
  })

  for (const i of [0, 1, 2]) launch(i)
  await healthy([0, 1, 2])

  return {
    endpoints,
    url: `etcd://${endpoints.join(',')}`,
    stop,
    async start(i) {
      if (procs[i]) return
      launch(i)
      // A lone member cannot be healthy (no quorum): wait for it once any quorum is back.
      const up = [0, 1, 2].filter((m) => procs[m] !== null)
      if (up.length >= 2) await healthy(up)
    },
    ctl,
  }
}
