// model/child-process.ts: every way a program can fail to start is the same rejected promise (MLT_CHILD_SPAWN),
// whether Node reports it as an 'error' event (ENOENT) or throws it from spawn() itself (E2BIG here; EPERM when a
// file capability cannot be granted, which is what hid Compose's ClusterIPs).

import t from 'tap'
import { ChildProcessError, runChecked, runChild } from '../../model/child-process.ts'

const rejection = async (p: Promise<unknown>): Promise<ChildProcessError> => {
  try {
    await p
  } catch (err) {
    if (err instanceof ChildProcessError) return err
    throw err
  }
  throw new Error('resolved')
}

t.test('a synchronous spawn error (E2BIG) is a rejection, not a throw', async (t) => {
  // Over the kernel's 128 KiB per argument: spawn() throws E2BIG synchronously.
  let p: Promise<unknown> | null = null
  t.doesNotThrow(() => {
    p = runChild(['true', 'x'.repeat(200_000)])
  })
  const err = await rejection(p!)
  t.equal(err.code, 'MLT_CHILD_SPAWN')
  t.equal(err.errno, 'E2BIG')
  t.match(err.message, /^true could not start: E2BIG$/)
})

t.test('an asynchronous spawn error (ENOENT) is the same rejection', async (t) => {
  const err = await rejection(runChecked(['/nonexistent/meshlet-program']))
  t.equal(err.code, 'MLT_CHILD_SPAWN')
  t.equal(err.errno, 'ENOENT')
})

t.test('an empty command rejects', async (t) => {
  t.equal((await rejection(runChild([]))).code, 'MLT_CHILD_SPAWN')
})

t.test('an exit resolves with the code; runChecked rejects with stderr', async (t) => {
  const r = await runChild(['sh', '-c', 'echo out; echo err >&2; exit 3'])
  t.equal(r.code, 3)
  t.equal(r.stdout, 'out\n')
  t.equal(r.stderr, 'err\n')
  t.match(r.output, /out\n/)
  const err = await rejection(runChecked(['sh', '-c', 'echo nope >&2; exit 2']))
  t.equal(err.code, 'MLT_CHILD_EXIT')
  t.equal(err.message, 'sh exited with 2: nope')
  t.equal((await runChecked(['true'])).code, 0)
})

t.test('a timeout kills the process group and answers at once', async (t) => {
  const started = Date.now()
  const r = await runChild(['sh', '-c', 'sleep 30 & sleep 30; wait'], { timeoutMs: 300, processGroup: true })
  t.equal(r.timedOut, true)
  t.ok(Date.now() - started < 5000, `answered in ${Date.now() - started} ms`)
})

t.test('output is bounded', async (t) => {
  const r = await runChild(['sh', '-c', 'head -c 100000 /dev/zero'], { maxOutputBytes: 1000 })
  t.equal(r.stdout.length, 1000)
  t.equal(r.code, 0)
})
