// The base error of every meshlet component. Each component keeps its own catalogue of codes (<component>/errors.ts),
// all in one shape, code → { what happened, what to do }; the message of each error names the object or field. Callers
// branch on `code`, never on message text. `meshlet check` and /status show the what-to-do beside a code (fixFor).

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

/** One catalogue entry: what happened (a short phrase) and what the user does about it (specific, actionable). */
export interface CatalogueEntry {
  readonly message: string
  readonly fix: string
}

/** Every code of every catalogue loaded in this process → its entry (each catalogue registers itself on import). */
const FIXES = new Map<string, CatalogueEntry>()

/**
 * Declares a component's catalogue: returns it unchanged (so its keys type the component's codes) and registers it, so
 * fixFor can answer for any code without model/ importing the components.
 */
export function defineCatalogue<const C extends Record<`MLT_${string}`, CatalogueEntry>>(catalogue: C): C {
  for (const [code, entry] of Object.entries(catalogue)) FIXES.set(code, entry)
  return catalogue
}

/** What to do about a code, or null when no loaded catalogue declares it. */
export function fixFor(code: string): string | null {
  return FIXES.get(code)?.fix ?? null
}

/**
 * The error class of a catalogue: `code` typed as its codes, the message its entry's when none is given (callers add
 * which object or field). `class DnsError extends catalogueError('DnsError', DNS_ERRORS) {}`.
 */
export function catalogueError<C extends Record<string, CatalogueEntry>>(name: string, catalogue: C) {
  return class extends MeshletError {
    declare readonly code: keyof C & string
    constructor(code: keyof C & string, message?: string, options?: { cause?: unknown }) {
      super(code, message ?? catalogue[code]!.message, options)
      this.name = name
    }
  }
}

/** The catalogue of model/child-process.ts (the one way meshlet runs ip, arping, openssl, exec probes). */
export const CHILD_PROCESS_ERRORS = defineCatalogue({
  /** The program could not start (ENOENT, EACCES, EPERM, E2BIG...). */
  MLT_CHILD_SPAWN: {
    message: 'program could not start',
    fix: 'install the program named in the message (ip: iproute2, arping: iputils-arping, openssl, nft: nftables) or put it on PATH; for EACCES/EPERM run meshlet as root or give it CAP_NET_ADMIN',
  },
  /** It exited non-zero where the caller needs it to work (runChecked only); its stderr is in the message. */
  MLT_CHILD_EXIT: {
    message: 'program failed',
    fix: "read the program's stderr in the message; usually missing rights (run as root or with CAP_NET_ADMIN) or an interface/address that does not exist (check --vip-interface)",
  },
})

export type ChildProcessErrorCode = keyof typeof CHILD_PROCESS_ERRORS
