// The fixed layout of a component README (STYLE.md §8 "Component README"), shared by test/readme.test.ts (sections
// and runnable examples) and test/presubmit.test.ts (every component folder has one).

export const README_SECTIONS = [
  '## Name',
  '## Description',
  '## Manifests',
  '## Behaviour',
  '## Metrics',
  '## Logs',
  '## Examples',
  '## Limits',
  '## See also',
] as const

/** The problems with a README's layout: empty when it starts with "# name" and has every section, in order. */
export function layoutProblems(name: string, text: string): string[] {
  const problems: string[] = []
  if (!text.startsWith(`# ${name}\n`)) problems.push(`does not start with "# ${name}"`)
  const headings = text.split('\n').filter((l) => l.startsWith('## '))
  const known: readonly string[] = README_SECTIONS
  const present = headings.filter((h) => known.includes(h))
  if (present.join('|') !== README_SECTIONS.join('|'))
    problems.push(`sections ${JSON.stringify(present)}, want ${JSON.stringify(README_SECTIONS)} in this order`)
  return problems
}

/** The text of one "## Section" up to the next "## " heading; '' when absent. */
export function section(text: string, heading: string): string {
  const start = text.indexOf(`\n${heading}\n`)
  if (start < 0) return ''
  const end = text.indexOf('\n## ', start + heading.length + 2)
  return text.slice(start, end < 0 ? undefined : end)
}
