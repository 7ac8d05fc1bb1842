// Partial start (issue 13 item 14): when a plane cannot start (here the proxy, whose --http port is taken), the planes
// that did start (health, dns, membership, lb) are closed before `meshlet up` exits 1.

import t from 'tap'
import { spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { MESHLET_BIN } from '../helpers/meshlet.ts'

t.test('the proxy cannot bind: every plane that started is closed, exit 1', { timeout: 60_000 }, async (t) => {
  const taken = createServer()
  await new Promise<void>((r) => taken.listen(0, '127.0.0.1', () => r()))
  t.teardown(() => new Promise((r) => taken.close(r)))
  const port = (taken.address() as { port: number }).port
  const dir = t.testdir({
    'web.yaml': 'apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n',
  })
  const args = ['up', '-f', dir, '--dns', '127.0.0.1:0', '--http', `127.0.0.1:${port}`, '--https', 'off']
  args.push('--admin', '127.0.0.1:0', '--upstream', '127.0.0.1:1', '--discovery-resolver', '127.0.0.1:1')
  args.push('--node', 'test-node', '--service-cidr', `127.${100 + Math.floor(Math.random() * 100)}.0.0/16`)
  const proc = spawn(process.execPath, [MESHLET_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => void proc.kill('SIGKILL'))
  let out = ''
  proc.stdout.setEncoding('utf8').on('data', (c: string) => (out += c))
  const code = await new Promise<number | null>((resolve) => {
    const timer = setTimeout(() => (proc.kill('SIGKILL'), resolve(null)), 30_000)
    proc.on('exit', (c) => (clearTimeout(timer), resolve(c)))
  })
  const lines = out
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
  t.equal(code, 1, 'exit code 1')
  const failed = lines.findIndex((l) => String(l.msg).startsWith('start failed: '))
  t.ok(failed >= 0, 'start failed is logged')
  const closed = lines.find((l) => l.msg === 'closed the planes that had started')
  t.same(closed?.planes, ['health', 'dns', 'membership', 'lb'], 'the planes that started were closed')
  t.ok(lines.indexOf(closed!) > failed, 'after the failure')
})
