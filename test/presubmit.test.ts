// House rules as tests (CoreDNS's presubmit and metrics-naming tests; issue 15). Each rule lives in prose somewhere
// (STYLE.md §8, ARCHITECTURE.md); here it is checked against the tree, so it cannot drift:
//   - every component folder has a README in the fixed layout;
//   - each component README's Metrics section lists exactly the metric names the component registers;
//   - metric names follow one convention: meshlet_<component>_…, counters end in _total, durations in _seconds;
//   - every declared error code (MLT_…) is raised somewhere, and every raised code is declared in a catalogue;
//   - every catalogue has one shape, code → { what happened, what to do }, with a real what-to-do for each code;
//   - every RuntimeOptions field has a comment with its default (and, for numbers, its unit), is required, and has its
//     default in DEFAULT_OPTIONS, the one place defaults live; no production file applies a default of its own;
//   - child loggers bind `sub` for a part of a component, or the Kubernetes word for their object;
//   - no test passes by saying it skipped (tap's skip reports it as skipped; .ci/no-skips.sh fails CI on that).

import t from 'tap'
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import {
  listenerFailed,
  listenerOpened,
  probeVerdict,
  snapshotApplied,
  upstreamConnectError,
} from '../model/diagnostics.ts'
import { fixFor } from '../model/errors.ts'
import { DEFAULT_OPTIONS } from '../model/options.ts'
import { layoutProblems, section } from './helpers/readme.ts'

const ROOT = fileURLToPath(new URL('..', import.meta.url))

/** Top-level folders that are not components: the CLI (documented in ARCHITECTURE.md's CLI contract) and tooling (tools/: generators run by hand). */
const NOT_COMPONENTS = new Set(['bin', 'bench', 'test', 'examples', 'tools', 'node_modules', 'coverage'])

/** Metric name prefixes a component may use besides its own folder name. */
const EXTRA_PREFIXES: Readonly<Record<string, readonly string[]>> = {
  // config/dns-discovery.ts is the discovery provider; its metrics say so.
  config: ['discovery'],
}

/**
 * Process-wide metrics admin/ registers under names older than the convention; ARCHITECTURE.md ("Admin API")
 * promises them, and renaming would break dashboards for no gain.
 */
const CORE_METRICS = new Set([
  'meshlet_config_reloads_total',
  'meshlet_objects',
  'meshlet_config_errors',
  'meshlet_snapshot_version',
])

function components(): string[] {
  return readdirSync(ROOT, { withFileTypes: true })
    .filter((e) => e.isDirectory() && !e.name.startsWith('.') && !NOT_COMPONENTS.has(e.name))
    .filter((e) => tsFiles(join(ROOT, e.name)).length > 0)
    .map((e) => e.name)
    .sort()
}

function tsFiles(dir: string): string[] {
  const out: string[] = []
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, e.name)
    if (e.isDirectory()) out.push(...tsFiles(path))
    else if (e.name.endsWith('.ts')) out.push(path)
  }
  return out.sort()
}

/**
 * Source without comments, so a code or metric named in a comment does not count as used. A comment starts after
 * whitespace (or a line start), which leaves "http://…" and "*\/*" inside strings alone.
 */
function code(path: string): string {
  return readFileSync(path, 'utf8')
    .replace(/(^|\s)\/\*[\s\S]*?\*\//g, '$1')
    .replace(/(^|\s)\/\/.*$/gm, '$1')
}

type MetricType = 'counter' | 'gauge' | 'histogram' | 'summary'

interface Registration {
  readonly name: string
  readonly type: MetricType | null
  readonly file: string
}

/** Every metric a component registers: prom-client constructors and proxy's StatsMetric; type null when unknown. */
function registrations(component: string): Registration[] {
  const out = new Map<string, Registration>()
  for (const path of tsFiles(join(ROOT, component))) {
    const text = code(path)
    const file = relative(ROOT, path)
    for (const m of text.matchAll(/\bname:\s*['"`](meshlet_[a-z0-9_]+)['"`]/g))
      if (!out.has(m[1]!)) out.set(m[1]!, { name: m[1]!, type: null, file })
    for (const m of text.matchAll(
      /new (Counter|Gauge|Histogram|Summary)\s*\(\s*\{\s*name:\s*['"`](meshlet_[a-z0-9_]+)/g,
    ))
      out.set(m[2]!, { name: m[2]!, type: m[1]!.toLowerCase() as MetricType, file })
    for (const m of text.matchAll(
      /new StatsMetric\(\s*['"](meshlet_[a-z0-9_]+)['"],\s*(?:'[^']*'|"[^"]*"),\s*['"](counter|gauge|histogram|summary)['"]/g,
    ))
      out.set(m[1]!, { name: m[1]!, type: m[2] as MetricType, file })
  }
  return [...out.values()].sort((a, b) => a.name.localeCompare(b.name))
}

/** Metric names in backticks in a README's Metrics section (labels and wildcard prefixes left out). */
function documentedMetrics(readme: string): string[] {
  const names = [...section(readme, '## Metrics').matchAll(/`(meshlet_[a-z0-9_]+)/g)].map((m) => m[1]!)
  return [...new Set(names.filter((n) => !n.endsWith('_')))].sort()
}

t.test('every component folder has a README in the fixed layout (STYLE.md §8)', async (t) => {
  const found = components()
  t.ok(found.length >= 8, `components found: ${found.join(', ')}`)
  for (const c of found) {
    const path = join(ROOT, c, 'README.md')
    if (!existsSync(path)) {
      t.fail(`${c}/README.md is missing`)
      continue
    }
    t.same(layoutProblems(c, readFileSync(path, 'utf8')), [], `${c}/README.md layout`)
  }
})

t.test("each component README's Metrics section lists exactly what the component registers", async (t) => {
  for (const c of components()) {
    const path = join(ROOT, c, 'README.md')
    if (!existsSync(path)) continue
    const registered = registrations(c).map((r) => r.name)
    const defaults = tsFiles(join(ROOT, c)).some((f) => code(f).includes('collectDefaultMetrics('))
    const documented = documentedMetrics(readFileSync(path, 'utf8')).filter(
      // Node's default metrics (collectDefaultMetrics with the meshlet_ prefix) are named by prom-client, not here.
      (n) => !(defaults && /^meshlet_(process|nodejs)_/.test(n)),
    )
    t.same(documented, registered, `${c}/README.md Metrics = what ${c}/ registers`)
  }
})

t.test('metric names follow one convention', async (t) => {
  for (const c of components()) {
    const prefixes = [c, ...(EXTRA_PREFIXES[c] ?? [])]
    for (const r of registrations(c)) {
      const where = `${r.name} (${r.file})`
      t.match(r.name, /^meshlet(_[a-z][a-z0-9]*)+$/, `${where}: lower snake case`)
      t.not(r.type, null, `${where}: registered with new Counter/Gauge/Histogram({ name }) so its type is known`)
      if (!CORE_METRICS.has(r.name))
        t.ok(
          prefixes.some((p) => r.name.startsWith(`meshlet_${p}_`)),
          `${where}: named meshlet_${prefixes.join('|')}_…`,
        )
      if (r.type === 'counter') t.match(r.name, /_total$/, `${where}: a counter ends in _total`)
      else t.notMatch(r.name, /_total$/, `${where}: only counters end in _total`)
      if (r.type === 'histogram' || r.type === 'summary')
        t.match(r.name, /_(seconds|bytes)$/, `${where}: a histogram names its unit (_seconds, _bytes)`)
      if (/duration|latency|_time\b/.test(r.name))
        t.match(r.name, /_seconds(_total)?$/, `${where}: durations in seconds`)
      t.notMatch(r.name, /_(ms|milliseconds|millis)(_|$)/, `${where}: base units (seconds), not milliseconds`)
    }
  }
  for (const n of CORE_METRICS)
    t.ok(
      registrations('admin').some((r) => r.name === n),
      `core metric ${n} exists`,
    )
})

function catalogueFiles(): string[] {
  return [
    ...components()
      .map((c) => join(ROOT, c, 'errors.ts'))
      .filter((p) => existsSync(p)),
    join(ROOT, 'model', 'config-errors.ts'),
    // The CLI is not a component (no README of its own) but keeps a catalogue in the same shape.
    join(ROOT, 'bin', 'errors.ts'),
  ]
}

const codes = (text: string) => new Set(text.match(/\bMLT_[A-Z0-9_]+\b/g) ?? [])

t.test('every declared error code is raised somewhere; every raised code is declared', async (t) => {
  const catalogues = catalogueFiles()
  const declared = new Set<string>()
  for (const p of catalogues) for (const c of codes(code(p))) declared.add(c)
  const raised = new Set<string>()
  for (const dir of [...components(), 'bin'])
    for (const p of tsFiles(join(ROOT, dir))) if (!catalogues.includes(p)) for (const c of codes(code(p))) raised.add(c)
  t.ok(declared.size > 20, `${declared.size} codes declared in ${catalogues.map((p) => relative(ROOT, p)).join(', ')}`)
  t.same(
    [...declared].filter((c) => !raised.has(c)).sort(),
    [],
    'declared but never raised (raise it where the failure happens, or drop it from its catalogue)',
  )
  t.same(
    [...raised].filter((c) => !declared.has(c)).sort(),
    [],
    "raised but not declared in a catalogue (declare it in its component's errors.ts)",
  )
})

t.test('every RuntimeOptions field has a comment with its default (and unit, for numbers)', async (t) => {
  const text = readFileSync(join(ROOT, 'model', 'options.ts'), 'utf8')
  const start = text.indexOf('export interface RuntimeOptions {')
  t.ok(start >= 0, 'RuntimeOptions found')
  const body = text.slice(start, text.indexOf('\n}', start))
  const fields = [...body.matchAll(/(\/\*\*[\s\S]*?\*\/\s*)?readonly (\w+)\??: ([^\n]+)/g)]
  t.ok(fields.length > 20, `${fields.length} fields`)
  for (const [, comment = '', name, type] of fields) {
    t.match(comment, /\bdefault\b/i, `${name}: the comment gives its default`)
    if (/\bnumber\b/.test(type!))
      t.match(comment, /\b(seconds?|ms|bytes|port|count|threads?)\b/, `${name}: the comment gives its unit`)
  }
})

t.test('every RuntimeOptions field has its default in DEFAULT_OPTIONS, and no use site applies one', async (t) => {
  const text = readFileSync(join(ROOT, 'model', 'options.ts'), 'utf8')
  const start = text.indexOf('export interface RuntimeOptions {')
  const body = text.slice(start, text.indexOf('\n}', start))
  const fields = [...body.matchAll(/readonly (\w+)(\??): ([^\n]+)/g)]
  t.ok(fields.length > 20, `${fields.length} fields`)
  t.same(Object.keys(DEFAULT_OPTIONS).sort(), fields.map((f) => f[1]!).sort(), 'DEFAULT_OPTIONS has every field')
  t.same(
    fields.filter((f) => f[2] === '?').map((f) => f[1]),
    [],
    'no optional field: its default is in DEFAULT_OPTIONS, not "when absent" at each use site',
  )
  // Each entry of DEFAULT_OPTIONS says what its value means, with the unit (a comment line right above it).
  const defaults = text.slice(text.indexOf('export const DEFAULT_OPTIONS'))
  for (const m of defaults.matchAll(/^ {2}(\w+):/gm)) {
    const before = defaults.slice(0, m.index).trimEnd()
    t.ok(before.endsWith('*/'), `DEFAULT_OPTIONS.${m[1]}: a comment above it says what the value means`)
  }
  // A field whose type has null keeps null as a value with a meaning (off, all addresses, derived), which its use
  // site interprets; every other field is always set, so `options.x ?? y` would be a second, drifting default.
  const nonNull = fields.filter((f) => !/\bnull\b/.test(f[3]!)).map((f) => f[1]!)
  const pattern = new RegExp(`\\b(?:options|opts)\\.(${nonNull.join('|')})\\s*\\?\\?`, 'g')
  const found: string[] = []
  for (const dir of [...components(), 'bin'])
    for (const p of tsFiles(join(ROOT, dir)))
      for (const m of code(p).matchAll(pattern)) found.push(`${relative(ROOT, p)}: options.${m[1]} ??`)
  t.same(found, [], 'no production file applies a default to an options field (DEFAULT_OPTIONS has it)')
})

t.test('every catalogue has one shape: code → { what happened, what to do }', async (t) => {
  for (const p of catalogueFiles()) {
    const file = relative(ROOT, p)
    const mod = (await import(pathToFileURL(p).href)) as Record<string, unknown>
    const entries = Object.values(mod)
      .filter((v): v is Record<string, unknown> => typeof v === 'object' && v !== null)
      .flatMap((v) => Object.entries(v))
      .filter(([k]) => k.startsWith('MLT_'))
    t.same(
      entries.map(([k]) => k).sort(),
      [...codes(code(p))].sort(),
      `${file}: every code it names is an entry of its exported catalogue (defineCatalogue)`,
    )
    for (const [c, e] of entries) {
      const { message, fix } = e as { message?: unknown; fix?: unknown }
      t.ok(typeof message === 'string' && message.trim() !== '', `${c}: says what happened (message)`)
      // A what-to-do names an action: a flag, a field, a command; a restated message is not one.
      t.ok(
        typeof fix === 'string' && fix.length >= 40 && fix !== message && fixFor(c) === fix,
        `${c}: says what to do (fix, at least a sentence) and is registered for fixFor`,
      )
    }
  }
})

/** Keys a .child() binding may use (ARCHITECTURE.md, "Components and the contract between them"). */
const LOG_KEYS = new Set(['component', 'sub', 'pod', 'service', 'node'])

t.test('sub-loggers bind one key for a part (sub), or the Kubernetes word for their object', async (t) => {
  const found: string[] = []
  for (const dir of [...components(), 'bin'])
    for (const p of tsFiles(join(ROOT, dir)))
      for (const m of code(p).matchAll(/\.child\(\s*\{\s*(\w+)\s*:/g))
        if (!LOG_KEYS.has(m[1]!)) found.push(`${relative(ROOT, p)}: ${m[1]}`)
  t.same(found.sort(), [], `child logger keys are ${[...LOG_KEYS].join(', ')}`)
})

t.test('every diagnostics channel is documented in ARCHITECTURE.md', async (t) => {
  const doc = readFileSync(join(ROOT, 'ARCHITECTURE.md'), 'utf8')
  const channels = [snapshotApplied, listenerOpened, listenerFailed, upstreamConnectError, probeVerdict]
  for (const c of channels) t.ok(doc.includes(`\`${String(c.name)}\``), `${String(c.name)} in ARCHITECTURE.md`)
})

t.test('no test passes by saying it skipped', async (t) => {
  const offenders: string[] = []
  for (const p of tsFiles(join(ROOT, 'test'))) {
    if (p === fileURLToPath(import.meta.url)) continue
    const text = readFileSync(p, 'utf8')
    for (const m of text.matchAll(/\bt\.(pass|comment)\(\s*['"`]skipped/g))
      offenders.push(`${relative(ROOT, p)}: t.${m[1]}('skipped…')`)
  }
  t.same(offenders, [], "use tap's skip: t.test(name, { skip: reason }, fn) or t.skip(reason)")
})

// The tree must be where this file thinks it is (a moved test would check an empty folder and pass).
t.ok(statSync(join(ROOT, 'ARCHITECTURE.md')).isFile(), 'repository root found')

/** Components whose imports must run one way (no cycle, `import type` included). proxy: issue 16. */
const ACYCLIC = ['proxy']

/** The relative imports of a file, as absolute paths (`import … from './x.ts'`, `import type` and re-exports too). */
function localImports(path: string): string[] {
  const out: string[] = []
  for (const m of code(path).matchAll(/^\s*(?:import|export)\b[^'"]*?from\s*['"](\.{1,2}\/[^'"]+)['"]/gm))
    out.push(join(path, '..', m[1]!))
  return out
}

t.test('imports inside a component listed as acyclic never form a cycle', async (t) => {
  for (const component of ACYCLIC) {
    const files = new Set(tsFiles(join(ROOT, component)))
    const state = new Map<string, 'open' | 'done'>()
    const cycles: string[] = []
    const visit = (f: string, stack: string[]): void => {
      if (state.get(f) === 'done') return
      if (state.get(f) === 'open') {
        cycles.push([...stack.slice(stack.indexOf(f)), f].map((p) => relative(ROOT, p)).join(' → '))
        return
      }
      state.set(f, 'open')
      for (const g of localImports(f)) if (files.has(g)) visit(g, [...stack, f])
      state.set(f, 'done')
    }
    for (const f of files) visit(f, [])
    t.same(cycles, [], `${component}/ has no import cycle`)
  }
})
