// The one way meshlet runs another program (ip, arping, openssl, exec probes, --on-liveness-failure). Node's
// spawn reports a program that cannot start in two ways: ENOENT, EACCES, EAGAIN, EMFILE and ENFILE as an 'error'
// event, every other errno (EPERM from a file capability the process may not take, E2BIG, EINVAL...) as an
// exception thrown by spawn() itself. A caller that only handles one of them loses the other: `promisify(execFile)`
// throws EPERM synchronously past its own `.catch`. Here both become the same rejected promise, with code
// MLT_CHILD_SPAWN; a program that started and then failed resolves with its exit code, so callers decide.

import { spawn, type ChildProcess } from 'node:child_process'
import { MeshletError, type ChildProcessErrorCode } from './errors.ts'

export class ChildProcessError extends MeshletError {
  declare readonly code: ChildProcessErrorCode
  /** The errno name when the program could not start (EPERM, ENOENT...), else null. */
  readonly errno: string | null
  readonly stderr: string
  constructor(code: ChildProcessErrorCode, message: string, errno: string | null, stderr: string, cause?: unknown) {
    super(code, message, { cause })
    this.errno = errno
    this.stderr = stderr
  }
}

export interface RunOptions {
  /** Kill after this long (SIGKILL); the result then has timedOut: true. Default: no limit. */
  readonly timeoutMs?: number
  readonly env?: NodeJS.ProcessEnv
  /**
   * Run in its own process group, and kill the whole group on timeout: what the program spawned dies with it
   * (kubelet's exec probe timeout).
   */
  readonly processGroup?: boolean
  /** Output kept per stream and combined; the rest is read and dropped. Default 64 KiB. */
  readonly maxOutputBytes?: number
}

export interface RunResult {
  /** Exit code, null when killed by a signal. */
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly timedOut: boolean
  readonly stdout: string
  readonly stderr: string
  /** stdout and stderr interleaved in arrival order (what a terminal would show), bounded like each stream. */
  readonly output: string
}

const DEFAULT_MAX_OUTPUT = 64 * 1024

/** Runs argv without a shell. Rejects with MLT_CHILD_SPAWN only when it cannot start; any exit resolves. */
export function runChild(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const [file, ...args] = argv
  if (file === undefined || file === '') return Promise.reject(spawnError(argv, 'empty command', null))
  let child: ChildProcess
  try {
    child = spawn(file, args, {
      detached: opts.processGroup === true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: opts.env ?? process.env,
    })
  } catch (err) {
    return Promise.reject(spawnError(argv, errnoOf(err), err))
  }
  return collect(child, argv, opts)
}

/** runChild, and an exit other than 0 rejects too (MLT_CHILD_EXIT, with stderr): for commands that must work. */
export async function runChecked(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await runChild(argv, opts)
  if (r.code === 0) return r
  const how = r.timedOut ? 'timed out' : r.signal ? `killed by ${r.signal}` : `exited with ${r.code}`
  const stderr = r.stderr.trim()
  throw new ChildProcessError('MLT_CHILD_EXIT', `${argv[0]} ${how}${stderr ? `: ${stderr}` : ''}`, null, stderr)
}

function collect(child: ChildProcess, argv: readonly string[], opts: RunOptions): Promise<RunResult> {
  const max = opts.maxOutputBytes ?? DEFAULT_MAX_OUTPUT
  const streams = { stdout: new Capped(max), stderr: new Capped(max), output: new Capped(max) }
  child.stdout!.on('data', (chunk: Buffer) => {
    streams.stdout.add(chunk)
    streams.output.add(chunk)
  })
  child.stderr!.on('data', (chunk: Buffer) => {
    streams.stderr.add(chunk)
    streams.output.add(chunk)
  })
  return new Promise((resolve, reject) => {
    const result = (code: number | null, signal: NodeJS.Signals | null, timedOut: boolean): RunResult => ({
      code,
      signal,
      timedOut,
      stdout: streams.stdout.text(),
      stderr: streams.stderr.text(),
      output: streams.output.text(),
    })
    // On timeout the result is given at once: a grandchild outside the group may hold the pipes open for ever.
    const timer =
      opts.timeoutMs === undefined
        ? null
        : setTimeout(() => {
            kill(child, opts.processGroup === true)
            resolve(result(null, 'SIGKILL', true))
          }, opts.timeoutMs)
    child.once('error', (err) => {
      if (timer) clearTimeout(timer)
      reject(spawnError(argv, errnoOf(err), err))
    })
    child.once('close', (code, signal) => {
      if (timer) clearTimeout(timer)
      resolve(result(code, signal, false))
    })
  })
}

function kill(child: ChildProcess, group: boolean): void {
  try {
    if (group && child.pid !== undefined) process.kill(-child.pid, 'SIGKILL')
    else child.kill('SIGKILL')
  } catch {
    // Already gone.
  }
}

function errnoOf(err: unknown): string {
  const e = err as NodeJS.ErrnoException
  return e.code ?? e.message ?? String(err)
}

function spawnError(argv: readonly string[], errno: string, cause: unknown): ChildProcessError {
  return new ChildProcessError(
    'MLT_CHILD_SPAWN',
    `${argv[0] ?? '(empty)'} could not start: ${errno}`,
    cause === null ? null : errno,
    '',
    cause,
  )
}

/** Keeps the first `max` bytes of a stream. */
class Capped {
  readonly #max: number
  readonly #chunks: Buffer[] = []
  #bytes = 0
  constructor(max: number) {
    this.#max = max
  }
  add(chunk: Buffer): void {
    if (this.#bytes >= this.#max) return
    const take = chunk.subarray(0, this.#max - this.#bytes)
    this.#bytes += take.length
    this.#chunks.push(take)
  }
  text(): string {
    return Buffer.concat(this.#chunks).toString('utf8')
  }
}
