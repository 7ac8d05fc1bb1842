// The etcd store provider's error catalogue (STYLE.md "Errors"): code → { what happened, what to do }. Callers branch on `code`.
// A stored value that is not a JSON object is a config error (MLT_CONFIG_PARSE with the key as file name), because
// ObjectError carries config codes only and it is shown exactly where a bad manifest file would be.

import { catalogueError, defineCatalogue } from '../model/errors.ts'

export const STORE_ERRORS = defineCatalogue({
  /** --store is neither `file` nor `etcd://HOST:PORT[,HOST:PORT…]`, or a TLS flag names a file that cannot be read. */
  MLT_STORE_OPTION: {
    message: 'store option invalid',
    fix: 'write --store as file or etcd://HOST:PORT[,HOST:PORT...], and make sure the --etcd-cacert/--etcd-cert/--etcd-key files exist and are readable',
  },
  /** etcd did not answer `apply`, `delete` or `get --store` (every endpoint down, or a timeout): nothing written. */
  MLT_STORE_UNREACHABLE: {
    message: 'etcd unreachable',
    fix: 'check that etcd is up and reachable at the --store endpoints (etcdctl --endpoints=... endpoint health), then run the command again',
  },
  /** `apply` could not allocate a ClusterIP: the address written is another Service's, the CIDR is full, or racing writers kept winning. */
  MLT_STORE_ALLOCATION: {
    message: 'ClusterIP allocation failed',
    fix: 'write another spec.clusterIP (or none), widen --service-cidr, or run apply again',
  },
})

export class StoreError extends catalogueError('StoreError', STORE_ERRORS) {}
