// `meshlet check -f FILE` through the real CLI: every invalid fixture exits 1 and prints its error line; valid
// fixtures exit 0; stdin ("-") works; a missing path exits 1; no -f is a usage error (2).

import t from 'tap'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { dirname, join } from 'node:path'
import { INVALID_CASES } from './invalid-cases.ts'

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const cli = join(root, 'bin', 'meshlet.ts')

interface Run {
  code: number | null
  stdout: string
  stderr: string
}

function check(args: string[], stdin?: string): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cli, 'check', ...args], { cwd: root, stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
    child.stdin.end(stdin ?? '')
  })
}

/** Runs `fn` over `items` with at most `n` at a time (2 cores, other test files in parallel). */
async function pool<T>(items: readonly T[], n: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!)
  }
  await Promise.all(Array.from({ length: n }, worker))
}

t.test('all invalid fixtures in one run: exit 1, exactly one line per fixture with its path', async (t) => {
  // Every fixture names its objects after itself, so one run sees no conflicts between fixtures.
  const r = await check(['-f', 'test/fixtures/invalid'])
  t.equal(r.code, 1, r.stderr)
  const lines = r.stdout.trimEnd().split('\n')
  t.equal(lines.length, INVALID_CASES.length, 'one line per error, one error per fixture')
  t.match(r.stderr, new RegExp(`${INVALID_CASES.length} error\\(s\\)`))
  for (const c of INVALID_CASES) {
    const file = `test/fixtures/invalid/${c.name}.yaml`
    const mine = lines.filter((l) => l.startsWith(`${file} `))
    t.equal(mine.length, 1, `${c.name}: one line`)
    const line = mine[0] ?? ''
    const head = `${file} doc ${c.doc ?? 1}${c.object ? ` (${c.object})` : ''}`
    t.ok(line.startsWith(head), `${c.name}: starts with ${head}: ${line}`)
    if (c.path) t.ok(line.includes(`: ${c.path}: `), `${c.name}: names ${c.path}`)
  }
})

t.test('one fixture per run, a sample of each kind: exit 1 and the exact line', async (t) => {
  const sample = INVALID_CASES.filter((_, i) => i % 10 === 0)
  const results = new Map<string, Run>()
  await pool(sample, 2, async (c) => {
    results.set(c.name, await check(['-f', `test/fixtures/invalid/${c.name}.yaml`]))
  })
  for (const c of sample) {
    const r = results.get(c.name)!
    t.equal(r.code, 1, `${c.name}: exit 1`)
    t.equal(r.stdout.trimEnd().split('\n').length, 1, `${c.name}: one line`)
  }
  t.equal(
    results.get('service-port-zero')?.stdout,
    'test/fixtures/invalid/service-port-zero.yaml doc 1 (Service default/service-port-zero): spec.ports[0].port: must be 1-65535, got 0\n',
  )
})

t.test('valid fixtures: exit 0', async (t) => {
  const r = await check(['-f', 'test/fixtures/valid'])
  t.equal(r.code, 0, r.stdout + r.stderr)
  t.equal(r.stdout, '')
})

t.test('stdin with -f -', async (t) => {
  const ok = await check(
    ['-f', '-'],
    'apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n',
  )
  t.equal(ok.code, 0, ok.stderr)
  const bad = await check(
    ['-f', '-'],
    'apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80, protocol: ICMP}]}\n',
  )
  t.equal(bad.code, 1)
  t.equal(
    bad.stdout,
    '<stdin> doc 1 (Service default/s): spec.ports[0].protocol: must be one of TCP, UDP, SCTP, got "ICMP"\n',
  )
  // What to do, once per code, on stderr (stdout keeps one line per error).
  t.match(bad.stderr, /^what to do \(MLT_CONFIG_ENUM, 1×\): use one of the values the message lists/m)
})

t.test('unreadable path exits 1; no -f exits 2', async (t) => {
  const missing = await check(['-f', 'test/fixtures/does-not-exist.yaml'])
  t.equal(missing.code, 1)
  t.match(missing.stderr, /does-not-exist\.yaml/)
  t.match(missing.stderr, /what to do: check that the -f path exists/)
  const usage = await check([])
  t.equal(usage.code, 2)
})
