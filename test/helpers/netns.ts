// Multi-host topologies for tests (DESIGN.md "Tests that cross hosts"): network namespaces joined by a bridge that
// lives in a namespace of its own, so nothing touches the host's interfaces or routes. Everything a topology creates
// is removed in teardown, in reverse order, even when a step fails half-way.

import { execFile } from 'node:child_process'
import { setTimeout as sleep } from 'node:timers/promises'

export interface Result {
  code: number | null
  stdout: string
  stderr: string
}

export function exec(cmd: readonly string[], timeoutMs = 10000): Promise<Result> {
  return new Promise((resolve) => {
    execFile(cmd[0]!, cmd.slice(1), { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0
      resolve({ code, stdout, stderr })
    })
  })
}

export async function must(cmd: readonly string[]): Promise<string> {
  const r = await exec(cmd)
  if (r.code !== 0) throw new Error(`${cmd.join(' ')} failed (${r.code}): ${r.stderr}`)
  return r.stdout
}

export const inNs = (ns: string, cmd: readonly string[], timeoutMs?: number) =>
  exec(['ip', 'netns', 'exec', ns, ...cmd], timeoutMs)

/** Polls `fn` until it returns something truthy; the error names `what` and the last value or error seen. */
export async function until<T>(
  what: string,
  fn: () => Promise<T | null | undefined | false>,
  timeoutMs = 15000,
  stepMs = 50,
): Promise<T> {
  const end = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      const v = await fn()
      if (v) return v
      last = v
    } catch (err) {
      last = err
    }
    if (Date.now() > end) throw new Error(`not seen in ${timeoutMs} ms: ${what} (last: ${String(last)})`)
    await sleep(stepMs)
  }
}

interface Teardown {
  teardown(fn: () => unknown): void
}

/** Clean-up steps run in reverse order at teardown; each is best effort so the rest still run. */
export function cleanupList(t: Teardown): (() => Promise<unknown> | unknown)[] {
  const cleanup: (() => Promise<unknown> | unknown)[] = []
  t.teardown(async () => {
    for (const fn of cleanup.reverse()) {
      try {
        await fn()
      } catch {
        // best effort: the rest must still go
      }
    }
  })
  return cleanup
}

/**
 * Creates `namespaces` (lo up) and a bridge `br0` with `bridgeAddress` (CIDR) in `lan`, then gives each host an
 * `eth0` on the bridge with its addresses (/24; the first is the primary). `tag` keeps veth names unique per test.
 */
export async function bridgeTopology(
  cleanup: (() => Promise<unknown> | unknown)[],
  opts: {
    tag: string
    lan: string
    bridgeAddress: string
    namespaces: readonly string[]
    hosts: readonly (readonly [string, readonly string[]])[]
  },
): Promise<void> {
  for (const ns of opts.namespaces) {
    await exec(['ip', 'netns', 'del', ns]) // a leftover from a killed run with the same pid
    await must(['ip', 'netns', 'add', ns])
    cleanup.push(() => exec(['ip', 'netns', 'del', ns]))
    await must(['ip', '-n', ns, 'link', 'set', 'lo', 'up'])
  }
  await must(['ip', '-n', opts.lan, 'link', 'add', 'br0', 'type', 'bridge'])
  await must(['ip', '-n', opts.lan, 'addr', 'add', opts.bridgeAddress, 'dev', 'br0'])
  await must(['ip', '-n', opts.lan, 'link', 'set', 'br0', 'up'])
  for (const [i, [ns, ips]] of opts.hosts.entries()) {
    const a = `${opts.tag}a${i}`
    const b = `${opts.tag}b${i}`
    await must(['ip', 'link', 'add', a, 'type', 'veth', 'peer', 'name', b])
    await must(['ip', 'link', 'set', a, 'netns', ns])
    await must(['ip', 'link', 'set', b, 'netns', opts.lan])
    await must(['ip', '-n', ns, 'link', 'set', a, 'name', 'eth0'])
    for (const ip of ips) await must(['ip', '-n', ns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0'])
    await must(['ip', '-n', ns, 'link', 'set', 'eth0', 'up'])
    await must(['ip', '-n', opts.lan, 'link', 'set', b, 'master', 'br0'])
    await must(['ip', '-n', opts.lan, 'link', 'set', b, 'up'])
  }
}
