// The data a proxy worker thread (proxy/worker-main.ts) and its main-thread driver (proxy/workers.ts) share, in a file
// of its own so that the driver, which proxy/index.ts imports, never imports the worker's entry point (which imports
// proxy/index.ts): proxy/ stays free of import cycles (test/presubmit.test.ts).

import type { RuntimeOptions } from '../model/options.ts'
import type { PemPair } from './tls.ts'

export interface ProxyWorkerInit {
  readonly index: number
  /** The plane's options; http and https come with the `listen` message. */
  readonly options: RuntimeOptions
  /** The default certificate, generated once by the main thread so every worker presents the same one. */
  readonly pem: PemPair | null
  readonly logLevel: string
}

/**
 * Upstream outcomes for health/'s passive ejection, batched per endpoint between flushes (one message per
 * REPORT_FLUSH_MS, not one per request). Each endpoint keeps its outcomes as runs: a number n > 0 for n failures in a
 * row, 0 for a success (successes in a row are one: each only resets the failure count). Replayed in order on the
 * main thread, they leave the outlier detector where the unbatched calls would have.
 */
export type ReportRuns = Record<string, number[]>
