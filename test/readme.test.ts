// Every component README has the sections of STYLE.md in order, and every manifest in its Examples section loads
// without an error (CoreDNS's readme_test).

import t from 'tap'
import { existsSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { loadManifestText } from '../config/load.ts'
import { layoutProblems, section } from './helpers/readme.ts'

const COMPONENTS = ['config', 'model', 'dns', 'lb', 'proxy', 'health', 'admin', 'membership', 'store']

for (const name of COMPONENTS) {
  const path = fileURLToPath(new URL(`../${name}/README.md`, import.meta.url))
  t.test(`${name}/README.md`, async (t) => {
    t.ok(existsSync(path), 'exists')
    if (!existsSync(path)) return
    const text = readFileSync(path, 'utf8')
    t.same(layoutProblems(name, text), [], '"# name", then every section of STYLE.md §8, in order')
    const examples = section(text, '## Examples')
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
