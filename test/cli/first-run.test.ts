// First run as a normal user (issue 19): unprivileged loopback defaults chosen and said once, a listener that cannot
// open names its flag without repeating itself, --log-format. As root the test runs meshlet as user nobody (65534).

import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { chmodSync, statSync } from 'node:fs'
import { dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { MESHLET_BIN } from '../helpers/meshlet.ts'
import { pollUntil } from '../helpers/wait.ts'
import { runtimeOptions } from '../../bin/cli-options.ts'

const MANIFESTS = fileURLToPath(new URL('../../examples/quickstart/manifests.yaml', import.meta.url))
const ADMIN = '127.0.0.1:29119'
const root = process.geteuid?.() === 0
/** As root, run as nobody; otherwise as ourselves (already not root). */
const asUser = root ? { uid: 65534, gid: 65534 } : {}

/**
 * nobody must reach the checkout and Node: a clone under `mktemp -d` sits in a 0700 directory. As root, give
 * "others" search permission (x, not read) on each ancestor that lacks it, and take it back when the tests end.
 */
function letNobodyTraverse(paths: readonly string[]): void {
  const changed = new Map<string, number>()
  for (const path of paths) {
    for (let dir = dirname(path); dir !== dirname(dir); dir = dirname(dir)) {
      const mode = statSync(dir).mode & 0o7777
      if ((mode & 0o001) === 0 && !changed.has(dir)) {
        chmodSync(dir, mode | 0o001)
        changed.set(dir, mode)
      }
    }
  }
  t.teardown(() => {
    for (const [dir, mode] of changed) chmodSync(dir, mode)
  })
}
if (root) letNobodyTraverse([MESHLET_BIN, process.execPath])

t.test('runtimeOptions: loopback defaults when not root, per flag not given; none as root', async (t) => {
  const user = runtimeOptions(['-f', 'x', '--http', '127.0.0.1:9000'], { MESHLET_NODE_ADDRESS: '10.0.0.1' }, 1000)
  t.same(user.dns, { host: '127.0.0.1', port: 5353 })
  t.same(user.http, { host: '127.0.0.1', port: 9000 }, 'a flag wins')
  t.same(user.https, { host: '127.0.0.1', port: 8443 })
  t.equal(user.nodeAddress, '10.0.0.1', 'the environment wins')
  t.same(user.unprivilegedDefaults, ['--dns 127.0.0.1:5353', '--https 127.0.0.1:8443'])
  const asRoot = runtimeOptions(['-f', 'x'], {}, 0)
  t.same(asRoot.dns, { host: '0.0.0.0', port: 53 })
  t.equal(asRoot.nodeAddress, null)
  t.same(asRoot.unprivilegedDefaults, [])
  t.equal(runtimeOptions(['-f', 'x'], {}, 0, true).logFormat, 'text', 'text on a terminal')
  t.equal(runtimeOptions(['-f', 'x'], {}, 0, false).logFormat, 'json')
  t.equal(runtimeOptions(['-f', 'x', '--log-format', 'json'], {}, 0, true).logFormat, 'json')
})

t.test('up without listen flags serves on the unprivileged defaults and says so once', async (t) => {
  const proc = spawn(process.execPath, [MESHLET_BIN, 'up', '-f', MANIFESTS, '--node', 'local', '--admin', ADMIN], {
    ...asUser,
    cwd: '/',
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)))
  t.teardown(() => {
    proc.kill('SIGKILL')
  })
  let out = ''
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()))
  // Ready, or exited (then waiting longer is pointless): 30 s on a loaded machine.
  const ready = await pollUntil(
    () =>
      fetch(`http://${ADMIN}/readyz`).then(
        (r) => r.status === 200,
        () => false,
      ),
    (ok) => ok || proc.exitCode !== null,
    30_000,
    200,
  )
  t.ok(ready, 'ready')
  // The log travels through a pipe and may trail /readyz: wait for the three listeners' lines too.
  await pollUntil(
    () => out,
    (o) => ['dns', 'http', 'https'].every((n) => o.includes(`"listener":"${n}"`)),
    10_000,
  )
  const lines = out
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>)
  const said = lines.filter((l) => String(l.msg).startsWith('not running as root'))
  t.equal(said.length, 1, 'said once')
  t.match(
    String(said[0]?.msg),
    /--dns 127\.0\.0\.1:5353 --http 127\.0\.0\.1:8080 --https 127\.0\.0\.1:8443 --node-address 127\.0\.0\.1/,
  )
  t.match(String(said[0]?.msg), /give --dns, --http, --https or --node-address/)
  const listening = (name: string) => lines.find((l) => l.msg === 'listening' && l.listener === name)
  t.match(listening('dns'), { address: '127.0.0.1', port: 5353 })
  t.match(listening('http'), { address: '127.0.0.1', port: 8080 })
  t.match(listening('https'), { address: '127.0.0.1', port: 8443 })
  proc.kill('SIGTERM')
  t.equal(await exited, 0)
})

t.test('a listener that cannot open names its flag, once, in text and in JSON', async (t) => {
  const blocked = [MESHLET_BIN, 'up', '-f', MANIFESTS, '--admin', 'off', '--dns', '127.0.0.1:53', '--http', 'off']
  const run = (extra: string[]) =>
    spawnSync(process.execPath, [...blocked, '--https', 'off', ...extra], {
      ...asUser,
      cwd: '/',
      encoding: 'utf8',
      timeout: 30_000,
    })
  const json = run([])
  t.equal(json.status, 1)
  t.match(json.stderr, /^meshlet: start failed: dns: .*EACCES.*; --dns ADDR:PORT moves it \(now 127\.0\.0\.1:53;/m)
  const msg = /meshlet: start failed: (.*)/.exec(json.stderr)?.[1] ?? ''
  const parts = msg.split(': ')
  t.ok(
    parts.every((p, i) => i === 0 || p !== parts[i - 1]),
    `no part repeats: ${msg}`,
  )
  const text = run(['--log-format', 'text'])
  t.equal(text.status, 1)
  t.match(text.stdout, /FATAL.*start failed: .*--dns ADDR:PORT moves it/)
  t.notMatch(text.stdout, /^\{"level"/m, 'text, not JSON')
})

t.test('an unreadable path is said once', async (t) => {
  const r = spawnSync(process.execPath, [MESHLET_BIN, 'check', '-f', '/nonexistent/meshlet.yaml'], {
    encoding: 'utf8',
    timeout: 30_000,
  })
  t.equal(r.status, 1)
  t.equal((r.stderr.match(/ENOENT/g) ?? []).length, 1, r.stderr)
})
