// The base error of every meshlet component. Each component keeps its own catalogue of codes (<component>/errors.ts);
// callers branch on `code`, never on message text.

const BRAND = Symbol.for('meshlet.error')

export class MeshletError extends Error {
  readonly code: string
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'MeshletError'
    this.code = code
    ;(this as unknown as Record<symbol, boolean>)[BRAND] = true
  }

  /**
   * instanceof that holds across two loaded copies of the module (undici's Symbol.for brand). Subclasses inherit this
   * static method, so for them it falls back to the prototype chain: a ConfigError is not `instanceof UsageError`.
   */
  static [Symbol.hasInstance](value: unknown): boolean {
    if (this !== MeshletError) return Function.prototype[Symbol.hasInstance].call(this, value)
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[BRAND] === true
  }
}

/** The catalogue of model/child-process.ts (the one way meshlet runs ip, arping, openssl, exec probes). */
export const CHILD_PROCESS_ERRORS = {
  /** The program could not start (ENOENT, EACCES, EPERM, E2BIG...): install it, or give the process the right. */
  MLT_CHILD_SPAWN: 'program could not start',
  /** It exited non-zero where the caller needs it to work (runChecked only); its stderr is in the message. */
  MLT_CHILD_EXIT: 'program failed',
} as const

export type ChildProcessErrorCode = keyof typeof CHILD_PROCESS_ERRORS
