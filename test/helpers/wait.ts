// Waiting for a condition with a deadline (issue 15: no fixed sleeps that stand for "long enough"). The poll interval
// is the only sleep, and it lives here; a test says what it waits for and how long it may take on a loaded machine.

import { setTimeout as sleep } from 'node:timers/promises'

/**
 * Calls `probe` every `intervalMs` until `done(value)` holds or `timeoutMs` has passed, and returns the last value
 * either way, so the test asserts on what it saw (a timeout is then an assertion failure naming the value).
 */
export async function pollUntil<T>(
  probe: () => T | Promise<T>,
  done: (value: T) => boolean,
  timeoutMs: number,
  intervalMs = 20,
): Promise<T> {
  const end = Date.now() + timeoutMs
  for (;;) {
    const value = await probe()
    if (done(value) || Date.now() >= end) return value
    await sleep(Math.min(intervalMs, Math.max(0, end - Date.now())))
  }
}

/** Polls `pred` until true; resolves with the elapsed ms, rejects naming `what` after `timeoutMs`. */
export async function waitFor(pred: () => boolean, timeoutMs: number, what: string, intervalMs = 20): Promise<number> {
  const t0 = Date.now()
  if (!(await pollUntil(pred, (ok) => ok, timeoutMs, intervalMs)))
    throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`)
  return Date.now() - t0
}
