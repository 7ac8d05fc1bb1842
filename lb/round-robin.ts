// Round robin over a list ordered by (ip, port) (specs/l4-health.md §3.2). The cursor belongs to the Service port and
// survives list changes: picking continues with the first endpoint that sorts after the last one picked, so a
// Snapshot never restarts the rotation from the top, and N·k picks over k endpoints give each exactly N.

import type { EndpointState } from '../model/snapshot.ts'

export class RoundRobin {
  #lastIp = ''
  #lastPort = -1

  pick(list: readonly EndpointState[]): EndpointState | null {
    const n = list.length
    if (n === 0) return null
    let i = 0
    // Lists are short and sorted: a linear scan for the successor is cheaper than keeping an index in sync.
    while (i < n) {
      const e = list[i]!
      if (e.ip > this.#lastIp || (e.ip === this.#lastIp && e.port > this.#lastPort)) break
      i++
    }
    const chosen = list[i === n ? 0 : i]!
    this.#lastIp = chosen.ip
    this.#lastPort = chosen.port
    return chosen
  }
}
