// No silent `.catch(() => {})` (issue 13 item 15): a swallowed rejection either logs once with context or says, in a
// comment on the line or the two lines above, why nothing can be done. Scans the sources this change answers for
// (config/, model/, bin/, proxy/upstream.ts); SOURCES can take the whole tree once every component is clean.

import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const SOURCES = ['bin', 'config', 'model', 'proxy/upstream.ts']
const SILENT = /\.catch\(\s*(\(\s*\)|_\w*)\s*=>\s*(\{\s*\}|undefined|null)\s*\)/

function tsFiles(dir: string): string[] {
  if (dir.endsWith('.ts')) return [dir]
  const out: string[] = []
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    if (e.isDirectory()) out.push(...tsFiles(p))
    else if (e.name.endsWith('.ts')) out.push(p)
  }
  return out
}

t.test('every silent catch has a comment saying why', async (t) => {
  const offenders: string[] = []
  for (const dir of SOURCES) {
    for (const file of tsFiles(join(ROOT, dir))) {
      const name = relative(ROOT, file)
      const lines = readFileSync(file, 'utf8').split('\n')
      lines.forEach((line, i) => {
        if (!SILENT.test(line)) return
        const near = [line, lines[i - 1] ?? '', lines[i - 2] ?? '']
        if (!near.some((l) => l.includes('//'))) offenders.push(`${name}:${i + 1}: ${line.trim()}`)
      })
    }
  }
  t.same(offenders, [], 'no silent catch without a why-comment')
})
