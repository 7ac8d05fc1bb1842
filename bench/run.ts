// `npm run bench [-- NAME ...]`: runs the named benchmarks (default: all) one after another. Each bench/NAME.ts
// starts meshlet and its peer in the same run and prints its own table of ratios; see bench/README.md.

import { readdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const dir = fileURLToPath(new URL('.', import.meta.url))
const available = readdirSync(dir)
  .filter((f) => f.endsWith('.ts') && f !== 'run.ts' && !f.startsWith('_'))
  .map((f) => f.slice(0, -3))
  .sort()

const args = process.argv.slice(2)
const names = args.filter((a) => !a.startsWith('-'))
const selected = names.length > 0 ? names : available
for (const name of selected) {
  if (!available.includes(name)) {
    process.stderr.write(`bench: unknown benchmark "${name}"; available: ${available.join(', ')}\n`)
    process.exit(2)
  }
}
for (const name of selected) {
  process.stdout.write(`\n=== ${name} ===\n`)
  const mod = (await import(`./${name}.ts`)) as { default: (args: string[]) => Promise<void> }
  await mod.default(args.filter((a) => a.startsWith('-')))
}
