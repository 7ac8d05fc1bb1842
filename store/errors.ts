// The etcd store provider's error catalogue (STYLE.md "Errors"): code → what happened. Callers branch on `code`.
// A stored value that is not a JSON object is a config error (MLT_CONFIG_PARSE with the key as file name), because
// ObjectError carries config codes only and it is shown exactly where a bad manifest file would be.

import { MeshletError } from '../model/errors.ts'

export const STORE_ERRORS = {
  /** --store is neither `file` nor `etcd://HOST:PORT[,HOST:PORT…]`, or a TLS flag names a file that cannot be read. */
  MLT_STORE_OPTION: 'store option invalid',
  /** etcd did not answer `apply`, `delete` or `get --store` (every endpoint down, or a timeout): nothing written. */
  MLT_STORE_UNREACHABLE: 'etcd unreachable',
} as const

export type StoreErrorCode = keyof typeof STORE_ERRORS

export class StoreError extends MeshletError {
  constructor(code: StoreErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options)
    this.name = 'StoreError'
  }
}
