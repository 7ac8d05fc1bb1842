// One long-running `nft -i` for every transaction of the nftables plane. Starting `nft` costs more than the
// transaction itself (exec, libnftables setup, a full ruleset cache fetch): 100–200 ms on a loaded machine, which is
// what kept an endpoint leaving on a failed probe in the rules past the 100 ms of issue 18. nft's interactive mode
// runs each input line as one batch (`nft_run_cmd_from_buffer`), so a transaction written as a single line, its
// commands separated by `;`, stays atomic.
//
// nft -i says nothing on success and its stdout is block-buffered into a pipe, so completion is read from stderr,
// which it writes unbuffered and in order: after each transaction comes a marker line that is always a syntax
// error, `mltmarkN`. Whatever stderr holds before the marker's own error is the transaction's error.
//
//   stdin:  <transaction as one line>\n  mltmark7\n
//   stderr: [Error: ...\n<line>\n^^^\n]  Error: syntax error, ...\nmltmark7\n        ^\n
//
// A child that exits, or a transaction that does not finish in time (the child is then killed), fails the pending
// transaction; the next one starts a new child.

import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import type { Logger } from 'pino'

interface Pending {
  readonly marker: string
  readonly resolve: () => void
  readonly reject: (err: Error) => void
  readonly timer: NodeJS.Timeout
}

/** stderr kept while waiting; an error echoes its input line, and a full-table line can be large. */
const MAX_STDERR = 8 * 1024 * 1024

export class NftShell {
  readonly #log: Logger
  readonly #timeoutMs: number
  #child: ChildProcessWithoutNullStreams | null = null
  #stderr = ''
  #pending: Pending | null = null
  #seq = 0
  /** Children started, for /status: more than one means nft died or hung and was replaced. */
  starts = 0

  /** The running child's pid, for /status; null between a child's end and the next transaction. */
  get pid(): number | null {
    return this.#child?.pid ?? null
  }

  constructor(log: Logger, timeoutMs: number) {
    this.#log = log
    this.#timeoutMs = timeoutMs
  }

  /** Runs `script` (nft commands, one a line) as one transaction. One at a time: the caller serialises. */
  run(script: string): Promise<void> {
    if (this.#pending) return Promise.reject(new Error('nft -i: a transaction is already running'))
    const line = script
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '')
      .join(' ; ')
    if (line === '') return Promise.resolve()
    let child: ChildProcessWithoutNullStreams
    try {
      child = this.#child ?? this.#spawn()
    } catch (err) {
      return Promise.reject(err as Error)
    }
    const marker = `mltmark${++this.#seq}`
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#fail(new Error(`nft -i: no answer in ${this.#timeoutMs} ms`))
        child.kill('SIGKILL')
      }, this.#timeoutMs)
      this.#pending = { marker, resolve, reject, timer }
      child.stdin.write(`${line}\n${marker}\n`)
    })
  }

  #spawn(): ChildProcessWithoutNullStreams {
    // Its own process group: a SIGTERM sent to meshlet's group (a terminal's ^C, `timeout`, a service manager) must
    // not end nft before meshlet has used it to delete the table. A SIGKILLed meshlet closes its stdin: nft exits.
    const child = spawn('nft', ['-i'], { stdio: ['pipe', 'pipe', 'pipe'], detached: true })
    this.starts++
    this.#child = child
    this.#stderr = ''
    // Nothing useful comes on stdout (no listing commands are sent); it is drained so nft never blocks on it.
    child.stdout.resume()
    child.stderr.setEncoding('utf8')
    child.stderr.on('data', (d: string) => this.#onStderr(d))
    // EPIPE when nft has gone: the 'exit' handler fails the transaction.
    child.stdin.on('error', () => {})
    child.on('error', (err) => {
      this.#drop(child)
      this.#fail(new Error(`nft -i could not run: ${err.message}`))
    })
    child.on('exit', (code, signal) => {
      this.#drop(child)
      this.#fail(new Error(`nft -i exited (${signal ?? code})`))
    })
    return child
  }

  #drop(child: ChildProcessWithoutNullStreams): void {
    if (this.#child !== child) return
    this.#child = null
    this.#log.debug({ pid: child.pid }, 'nft -i gone; the next transaction starts another')
  }

  #onStderr(d: string): void {
    this.#stderr += d
    if (this.#stderr.length > MAX_STDERR) this.#stderr = this.#stderr.slice(-MAX_STDERR)
    const p = this.#pending
    if (!p) return
    const at = this.#stderr.indexOf(`\n${p.marker}\n`)
    if (at < 0) return
    // The marker's error ends with its caret line.
    const end = this.#stderr.indexOf('\n', at + p.marker.length + 2)
    if (end < 0) return
    const head = this.#stderr.lastIndexOf('Error:', at)
    const own = this.#stderr.slice(0, head < 0 ? at : head).trim()
    this.#stderr = this.#stderr.slice(end + 1)
    this.#pending = null
    clearTimeout(p.timer)
    if (own === '') p.resolve()
    else p.reject(new Error(shorten(own)))
  }

  #fail(err: Error): void {
    const p = this.#pending
    if (!p) return
    this.#pending = null
    clearTimeout(p.timer)
    p.reject(err)
  }

  /** Ends the child: stdin closed, then SIGKILL if it has not exited within a second. */
  async close(): Promise<void> {
    const child = this.#child
    if (!child) return
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => child.kill('SIGKILL'), 1_000)
      child.once('exit', () => {
        clearTimeout(timer)
        resolve()
      })
      child.stdin.end()
    })
  }
}

/** nft echoes the whole input line under an error, carets below; a full-table line is long, so keep what they mark. */
function shorten(text: string): string {
  const lines = text.split('\n')
  const out: string[] = []
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!
    if (l.length <= 400) {
      out.push(l)
      continue
    }
    const carets = lines[i + 1] ?? ''
    const at = /^\s*\^/.test(carets) ? carets.indexOf('^') : 0
    if (at > 0) i++ // the caret line's offsets do not fit the cut line
    const from = Math.max(0, at - 150)
    out.push(`${from > 0 ? '…' : ''}${l.slice(from, from + 400)}…`)
  }
  return out.join('\n')
}
