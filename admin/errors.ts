// The admin component's error catalogue, code → { what happened, what to do }: failures of the clients of the admin
// API (`meshlet get`).

import { catalogueError, defineCatalogue } from '../model/errors.ts'

export const ADMIN_ERRORS = defineCatalogue({
  /** `meshlet get` cannot read /status at the --admin address (meshlet not running there, or not answering 200). */
  MLT_ADMIN_UNREACHABLE: {
    message: 'admin API unreachable',
    fix: 'start meshlet (meshlet up), or point `meshlet get` at the --admin ADDR:PORT meshlet was started with',
  },
})

export class AdminError extends catalogueError('AdminError', ADMIN_ERRORS) {}
