// Error codes of the etcd store provider. Callers branch on `code`.

import { MeshletError } from '../model/errors.ts'

export type StoreErrorCode =
  /** --store is neither `file` nor `etcd://HOST:PORT[,HOST:PORT…]`, or a TLS flag names a file that cannot be read. */
  | 'MLT_STORE_OPTION'
  /** etcd did not answer `apply` or `delete` (every endpoint down, or the request timed out): nothing was written. */
  | 'MLT_STORE_UNREACHABLE'
  /** A value under PREFIX/objects/ is not a JSON object (written by hand with etcdctl): the key is skipped. */
  | 'MLT_STORE_VALUE'

export class StoreError extends MeshletError {
  constructor(code: StoreErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options)
    this.name = 'StoreError'
  }
}
