// exec: runs the argument vector on meshlet's host (or behind --exec-prefix, e.g. "docker exec {pod}"), no shell, no
// Pod environment. Exit 0 is a success; any other exit, a signal, or a command that cannot start (ENOENT, EACCES,
// like exit 127) is a failure. The timeout kills the whole process group with SIGKILL, as kubelet does since 1.20
// (specs/l4-health.md §6.2, kubernetes/kubernetes#26895).

import { spawn } from 'node:child_process'
import { failure, MAX_BODY_BYTES, success, SUCCESS, type ProbeOutcome } from './outcome.ts'

/** How much of the output a message keeps: enough to explain a failure in /status, never the whole 10 KiB. */
const MESSAGE_OUTPUT_CHARS = 200

export function runCommand(argv: readonly string[], timeoutMs: number, env?: NodeJS.ProcessEnv): Promise<ProbeOutcome> {
  return new Promise((resolve) => {
    const [file, ...args] = argv
    if (file === undefined) {
      resolve(failure('empty command', 'MLT_HEALTH_SPAWN'))
      return
    }
    // detached: the child leads its own process group, so the timeout can kill what it spawned too.
    const child = spawn(file, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env })
    let out = ''
    let outBytes = 0
    let settled = false
    const collect = (chunk: Buffer) => {
      if (outBytes >= MAX_BODY_BYTES) return
      const take = chunk.subarray(0, MAX_BODY_BYTES - outBytes)
      outBytes += take.length
      out += take.toString('utf8')
    }
    child.stdout!.on('data', collect)
    child.stderr!.on('data', collect)
    const done = (r: ProbeOutcome) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      resolve(r)
    }
    const timer = setTimeout(() => {
      killGroup(child.pid)
      done(failure(`command ${show(argv)} timed out after ${timeoutMs / 1000}s`, 'MLT_HEALTH_TIMEOUT'))
    }, timeoutMs)
    child.once('error', (err: NodeJS.ErrnoException) => {
      done(failure(`command ${show(argv)} could not start: ${err.code ?? err.message}`, 'MLT_HEALTH_SPAWN'))
    })
    child.once('close', (code, signal) => {
      const output = out.trim().slice(0, MESSAGE_OUTPUT_CHARS)
      if (code === 0) done(output === '' ? SUCCESS : success(output))
      else if (signal) done(failure(`command ${show(argv)} killed by ${signal}${output ? `: ${output}` : ''}`))
      else done(failure(`command ${show(argv)} exited with ${code}${output ? `: ${output}` : ''}`))
    })
  })
}

function killGroup(pid: number | undefined): void {
  if (pid === undefined) return
  try {
    process.kill(-pid, 'SIGKILL')
  } catch {
    // Already gone.
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
