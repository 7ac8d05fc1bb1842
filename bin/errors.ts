// The CLI's error catalogue (STYLE.md "Errors"), in the shape of the components' catalogues. A usage error ends the
// process with exit code 2 and the usage text; any other MeshletError with exit code 1 and its message.

import { catalogueError, defineCatalogue } from '../model/errors.ts'

export const CLI_ERRORS = defineCatalogue({
  /** A flag, a MESHLET_* variable or a command that does not parse (an unknown command, --dns-ttl 9000...). */
  MLT_CLI_USAGE: {
    message: 'usage error',
    fix: 'fix the flag or command the message names; `meshlet COMMAND --help` lists the flags, their defaults and MESHLET_* variables',
  },
})

export class CliError extends catalogueError('CliError', CLI_ERRORS) {}
