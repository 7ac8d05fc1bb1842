// config/watch.ts: ManifestSource on a temp directory — last good state across broken and fixed edits, files
// appearing and going, editors that replace files by rename, status() and its reload history.

import t from 'tap'
import { mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { pino } from 'pino'
import { ManifestSource } from '../../config/watch.ts'
import type { KubeObject, Service } from '../../model/objects.ts'
import type { ObjectError } from '../../model/snapshot.ts'
import { waitFor } from '../helpers/wait.ts'

const svc = (name: string, port: number) =>
  `apiVersion: v1\nkind: Service\nmetadata:\n  name: ${name}\nspec:\n  ports:\n  - port: ${port}\n`

interface Update {
  objects: KubeObject[]
  errors: ObjectError[]
  at: number
}

function harness(t: { teardown(fn: () => void): void }, paths: string[]) {
  const updates: Update[] = []
  const logs: { level: number; msg: string }[] = []
  const log = pino({ level: 'info' }, { write: (s: string) => void logs.push(JSON.parse(s)) })
  const source = new ManifestSource(paths, {
    log,
    onUpdate: (objects, errors) => updates.push({ objects, errors, at: Date.now() }),
  })
  t.teardown(() => source.close())
  const last = () => updates[updates.length - 1]!
  /** Polls until the latest update satisfies `pred` (generous: the machine may be loaded). */
  const until = async (what: string, pred: (u: Update) => boolean, timeoutMs = 8000): Promise<Update> => {
    await waitFor(() => updates.length > 0 && pred(updates[updates.length - 1]!), timeoutMs, what)
    return updates[updates.length - 1]!
  }
  return { source, updates, logs, last, until }
}

const ports = (u: Update) =>
  u.objects
    .filter((o): o is Service => o.kind === 'Service')
    .map((o) => `${o.meta.name}:${o.spec.ports[0]?.port}`)
    .sort()

t.test('directory: valid → broken → fixed, last good objects kept meanwhile', async (t) => {
  const dir = t.testdir({ 'a.yaml': svc('a', 80), 'b.yaml': svc('b', 80) })
  const h = harness(t, [dir])
  await h.source.start()
  t.equal(h.updates.length, 1, 'start() calls onUpdate once')
  t.same(ports(h.last()), ['a:80', 'b:80'])
  t.same(h.last().errors, [])

  // A syntax error: a.yaml keeps its objects, the error is reported and logged once.
  const t0 = Date.now()
  writeFileSync(join(dir, 'a.yaml'), 'apiVersion: v1\nkind: Service\nmetadata: {name: a\n')
  const broken = await h.until('syntax error reported', (u) => u.errors.length === 1)
  t.comment(`broken edit applied after ${broken.at - t0} ms`)
  t.ok(broken.at - t0 < 2000, 'applied well within the 1 s promise (2 s allowed on a loaded machine)')
  t.equal(broken.errors[0]?.code, 'MLT_CONFIG_PARSE')
  t.same(ports(broken), ['a:80', 'b:80'], 'objects of the broken file kept')
  const st = h.source.status()
  const fa = st.files.find((f) => f.file === join(dir, 'a.yaml'))
  t.equal(fa?.errors, 1)
  t.match(fa?.lastError, /a\.yaml doc 1: YAML syntax error/)
  t.equal(fa?.objects, 1)
  // The same broken text touched again: no new log line, no new update.
  const nUpdates = h.updates.length
  const warnsBefore = h.logs.filter((l) => l.level === 40).length
  await h.source.reload()
  t.equal(h.updates.length, nUpdates, 'unchanged files publish nothing')
  t.equal(h.logs.filter((l) => l.level === 40).length, warnsBefore, 'error logged once')
  t.equal(h.logs.filter((l) => l.level === 40 && /YAML syntax error/.test(l.msg)).length, 1)

  // An object-level error: the object keeps its last good version (port 80), the error stays reported.
  writeFileSync(join(dir, 'b.yaml'), svc('b', 0))
  const invalid = await h.until('validation error for b', (u) => u.errors.some((e) => e.path === 'spec.ports[0].port'))
  t.same(ports(invalid), ['a:80', 'b:80'], 'invalid b keeps its last good version')
  t.equal(invalid.errors.length, 2)

  // Fixes clear the errors and apply the new content.
  writeFileSync(join(dir, 'a.yaml'), svc('a', 81))
  writeFileSync(join(dir, 'b.yaml'), svc('b', 82))
  const fixed = await h.until('both fixed', (u) => u.errors.length === 0 && ports(u).join() === 'a:81,b:82')
  t.same(fixed.errors, [])
  t.ok(
    h.source.status().files.every((f) => f.lastError === null),
    'status clean',
  )
  const hist = h.source.status().reloads
  t.ok(hist.length >= 3)
  t.same(
    { ok: hist.at(-1)?.ok, objects: hist.at(-1)?.objects, errors: hist.at(-1)?.errors },
    { ok: true, objects: 2, errors: 0 },
  )
  t.ok(
    hist.some((r) => !r.ok && r.messages.some((m) => m.includes('YAML syntax error'))),
    'history keeps the failed reload',
  )
})

t.test('files created later and removed; nested directories; duplicates across files', async (t) => {
  const dir = t.testdir({ 'a.yaml': svc('a', 80) })
  const h = harness(t, [dir])
  await h.source.start()
  writeFileSync(join(dir, 'new.yaml'), svc('n', 90))
  await h.until('new file picked up', (u) => ports(u).includes('n:90'))
  mkdirSync(join(dir, 'sub'))
  writeFileSync(join(dir, 'sub', 'deep.yml'), svc('d', 91))
  await h.until('file in a new subdirectory picked up', (u) => ports(u).includes('d:91'))
  writeFileSync(join(dir, 'notes.txt'), 'ignored')
  writeFileSync(join(dir, 'z-dup.yaml'), svc('a', 99))
  const dup = await h.until('duplicate reported', (u) => u.errors.some((e) => e.code === 'MLT_CONFIG_CONFLICT'))
  t.same(ports(dup), ['a:80', 'd:91', 'n:90'], 'first definition wins')
  const dupStatus = h.source.status().files.find((f) => f.file === join(dir, 'z-dup.yaml'))
  t.same([dupStatus?.objects, dupStatus?.errors], [0, 1], 'the conflict shows on the second file in status()')
  t.match(dupStatus?.lastError, /defined twice: already defined in .*a\.yaml doc 1/)
  rmSync(join(dir, 'z-dup.yaml'))
  rmSync(join(dir, 'new.yaml'))
  const gone = await h.until(
    'removed files drop their objects',
    (u) => u.errors.length === 0 && !ports(u).includes('n:90'),
  )
  t.same(ports(gone), ['a:80', 'd:91'])
})

t.test('a single file replaced by rename (editor save), deleted and restored', async (t) => {
  const dir = t.testdir({ 'web.yaml': svc('web', 80), 'other.yaml': svc('other', 1) })
  const file = join(dir, 'web.yaml')
  const h = harness(t, [file])
  await h.source.start()
  t.same(ports(h.last()), ['web:80'], 'only the named file is read')
  for (const port of [81, 82, 83]) {
    writeFileSync(join(dir, '.web.yaml.tmp'), svc('web', port))
    renameSync(join(dir, '.web.yaml.tmp'), file)
    await h.until(`rename-replace to ${port}`, (u) => ports(u).join() === `web:${port}`)
  }
  t.pass('every rename-replace was seen')
  writeFileSync(join(dir, 'other.yaml'), svc('other', 2))
  rmSync(file)
  const missing = await h.until('deletion reported', (u) => u.errors.some((e) => e.code === 'MLT_CONFIG_UNREADABLE'))
  t.same(ports(missing), ['web:83'], 'a named file that disappears keeps its objects')
  writeFileSync(file, svc('web', 84))
  const back = await h.until('restored', (u) => u.errors.length === 0 && ports(u).join() === 'web:84')
  t.same(back.errors, [])
})

t.test('start() fails on an unreadable path', async (t) => {
  const dir = t.testdir({})
  const h = harness(t, [join(dir, 'missing.yaml')])
  await t.rejects(h.source.start(), { code: 'MLT_CONFIG_UNREADABLE' })
  t.equal(h.updates.length, 0)
})

t.test('status() keeps the last 20 reloads', async (t) => {
  const dir = t.testdir({ 'a.yaml': svc('a', 1) })
  const h = harness(t, [dir])
  await h.source.start()
  for (let i = 2; i <= 26; i++) {
    writeFileSync(join(dir, 'a.yaml'), svc('a', i))
    await h.source.reload()
  }
  await h.until('last write applied', (u) => ports(u).join() === 'a:26')
  const st = h.source.status()
  t.equal(st.reloads.length, 20)
  t.same(st.reloads.at(-1)?.changed, [join(dir, 'a.yaml')])
  t.same(st.paths, [dir])
  t.same(
    st.files.map((f) => [f.file, f.objects, f.errors]),
    [[join(dir, 'a.yaml'), 1, 0]],
  )
})

t.test('a reload keeps the identity of unchanged objects (no second copy held per reloaded file)', async (t) => {
  const dir = t.testdir({ 'a.yaml': `${svc('a', 80)}---\n${svc('b', 80)}` })
  const h = harness(t, [dir])
  await h.source.start()
  const byName = (u: Update, name: string) => u.objects.find((o) => o.meta.name === name)!
  const a0 = byName(h.last(), 'a')
  const b0 = byName(h.last(), 'b')
  // b's document changes, a's does not (same text, same position): a must be the very object published before,
  // the one the Store's build memo interned; a fresh equal copy here would stay alive beside it (issue 14).
  writeFileSync(join(dir, 'a.yaml'), `${svc('a', 80)}---\n${svc('b', 81)}`)
  const u = await h.until('b changed', (x) => ports(x).includes('b:81'))
  t.equal(byName(u, 'a'), a0, 'unchanged object: same identity')
  t.not(byName(u, 'b'), b0, 'changed object: a new one')
  // The same content written again (a touch): nothing new is published, and a later real change keeps a's identity.
  writeFileSync(join(dir, 'a.yaml'), `${svc('a', 80)}---\n${svc('b', 82)}`)
  const u2 = await h.until('b changed again', (x) => ports(x).includes('b:82'))
  t.equal(byName(u2, 'a'), a0, 'still the first object after a second reload')
})
