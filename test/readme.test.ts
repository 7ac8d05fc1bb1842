// Every component README has the sections of STYLE.md in order, and every manifest in its Examples section loads
// without an error (CoreDNS's readme_test).

import t from 'tap'
import { existsSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { loadManifestText } from '../config/load.ts'

const SECTIONS = [
  '## Name',
  '## Description',
  '## Manifests',
  '## Behaviour',
  '## Metrics',
  '## Logs',
  '## Examples',
  '## Limits',
  '## See also',
]
const COMPONENTS = ['dns', 'lb', 'proxy', 'health']

for (const name of COMPONENTS) {
  const path = fileURLToPath(new URL(`../${name}/README.md`, import.meta.url))
  t.test(`${name}/README.md`, async (t) => {
    t.ok(existsSync(path), 'exists')
    if (!existsSync(path)) return
    const text = readFileSync(path, 'utf8')
    t.ok(text.startsWith(`# ${name}\n`), 'starts with "# name"')
    const headings = text.split('\n').filter((l) => l.startsWith('## '))
    t.same(
      headings.filter((h) => SECTIONS.includes(h)),
      SECTIONS,
      'sections present, in order',
    )
    const examples = text.slice(text.indexOf('## Examples'), text.indexOf('## Limits'))
    const blocks = [...examples.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]!)
    t.ok(blocks.length > 0, 'at least one yaml example')
    for (const [i, block] of blocks.entries()) {
      const loaded = loadManifestText(block, `${name}/README.md example ${i + 1}`)
      t.same(loaded.errors, [], `example ${i + 1} is valid`)
      t.ok(loaded.objects.length > 0, `example ${i + 1} has objects`)
    }
  })
}

t.test('the quickstart manifests are valid', async (t) => {
  const path = fileURLToPath(new URL('../examples/quickstart/manifests.yaml', import.meta.url))
  const loaded = loadManifestText(readFileSync(path, 'utf8'), path)
  t.same(loaded.errors, [])
  t.equal(loaded.objects.length, 6)
})
