// The admin component's error catalogue: failures of the clients of the admin API (`meshlet get`).

import { MeshletError } from '../model/errors.ts'

export type AdminErrorCode =
  /** `meshlet get` cannot read /status at the --admin address (meshlet not running there, or not answering 200). */
  'MLT_ADMIN_UNREACHABLE'

export class AdminError extends MeshletError {
  declare readonly code: AdminErrorCode
  constructor(code: AdminErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options)
    this.name = 'AdminError'
  }
}
