// exec: runs the argument vector on meshlet's host (or behind --exec-prefix, e.g. "docker exec {pod}"), no shell, no
// Pod environment. Exit 0 is a success; any other exit, a signal, or a command that cannot start (ENOENT, EACCES,
// like exit 127) is a failure. The timeout kills the whole process group with SIGKILL, as kubelet does since 1.20
// (specs/l4-health.md §6.2, kubernetes/kubernetes#26895).

import { ChildProcessError, runChild } from '../../model/child-process.ts'
import { failure, MAX_BODY_BYTES, success, SUCCESS, type ProbeOutcome } from './outcome.ts'

/** How much of the output a message keeps: enough to explain a failure in /status, never the whole 10 KiB. */
const MESSAGE_OUTPUT_CHARS = 200

export async function runCommand(
  argv: readonly string[],
  timeoutMs: number,
  env?: NodeJS.ProcessEnv,
): Promise<ProbeOutcome> {
  if (argv[0] === undefined) return failure('empty command', 'MLT_HEALTH_SPAWN')
  try {
    // processGroup: the child leads its own group, so the timeout kills what it spawned too.
    const r = await runChild(argv, { timeoutMs, env, processGroup: true, maxOutputBytes: MAX_BODY_BYTES })
    if (r.timedOut) return failure(`command ${show(argv)} timed out after ${timeoutMs / 1000}s`, 'MLT_HEALTH_TIMEOUT')
    const output = r.output.trim().slice(0, MESSAGE_OUTPUT_CHARS)
    if (r.code === 0) return output === '' ? SUCCESS : success(output)
    if (r.signal) return failure(`command ${show(argv)} killed by ${r.signal}${output ? `: ${output}` : ''}`)
    return failure(`command ${show(argv)} exited with ${r.code}${output ? `: ${output}` : ''}`)
  } catch (err) {
    const errno = err instanceof ChildProcessError ? (err.errno ?? err.message) : String(err)
    return failure(`command ${show(argv)} could not start: ${errno}`, 'MLT_HEALTH_SPAWN')
  }
}

function show(argv: readonly string[]): string {
  const s = JSON.stringify(argv)
  return s.length > 120 ? `${s.slice(0, 117)}...` : s
}

export interface Placeholders {
  readonly pod: string
  readonly namespace: string
  readonly ip: string
  readonly container: string
}

/**
 * Splits a prefix or hook command into words the way a shell would for plain words and quotes ('...', "...", \x),
 * then fills {pod}, {namespace}, {ip} and {container} inside each word. No shell runs, so values can never be
 * interpreted as shell syntax.
 */
export function expandCommand(template: string, values: Placeholders): string[] {
  const words: string[] = []
  let cur = ''
  let inWord = false
  let quote: '"' | "'" | null = null
  for (let i = 0; i < template.length; i++) {
    const c = template[i]!
    if (quote) {
      if (c === quote) quote = null
      else if (c === '\\' && quote === '"' && i + 1 < template.length) cur += template[++i]
      else cur += c
    } else if (c === '"' || c === "'") {
      quote = c
      inWord = true
    } else if (c === '\\' && i + 1 < template.length) {
      cur += template[++i]
      inWord = true
    } else if (c === ' ' || c === '\t' || c === '\n') {
      if (inWord) words.push(cur)
      cur = ''
      inWord = false
    } else {
      cur += c
      inWord = true
    }
  }
  if (inWord) words.push(cur)
  return words.map((w) => w.replace(/\{(pod|namespace|ip|container)\}/g, (_, k: keyof Placeholders) => values[k]))
}
