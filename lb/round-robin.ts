// Round robin over a list ordered by (ip, port) (specs/l4-health.md §3.2). The cursor belongs to the Service port and
// survives list changes: picking continues with the first endpoint that sorts after the last one picked, so a
// Snapshot never restarts the rotation from the top, and N·k picks over k endpoints give each exactly N.

import type { EndpointState } from '../model/snapshot.ts'

export class RoundRobin {
  #lastIp = ''
  #lastPort = -1

  /**
   * The next endpoint in rotation, skipping those in `tried` (the endpoints one connection already failed to reach:
   * a retry that took the shared cursor's next pick could land on the same dead endpoint, because other connections
   * move the cursor meanwhile). null when the list is empty or every endpoint in it was tried.
   */
  pick(list: readonly EndpointState[], tried: readonly EndpointState[] | null = null): EndpointState | null {
    const n = list.length
    if (n === 0) return null
    let i = 0
    // Lists are short and sorted: a linear scan for the successor is cheaper than keeping an index in sync.
    while (i < n) {
      const e = list[i]!
      if (e.ip > this.#lastIp || (e.ip === this.#lastIp && e.port > this.#lastPort)) break
      i++
    }
    for (let k = 0; k < n; k++) {
      const chosen = list[(i + k) % n]!
      if (tried !== null && wasTried(tried, chosen)) continue
      this.#lastIp = chosen.ip
      this.#lastPort = chosen.port
      return chosen
    }
    return null
  }
}

/** By address, not identity: a Snapshot between two attempts replaces the endpoint objects. */
function wasTried(tried: readonly EndpointState[], e: EndpointState): boolean {
  for (const x of tried) if (x.port === e.port && x.ip === e.ip) return true
  return false
}
