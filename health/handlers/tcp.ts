// tcpSocket: a connect within the timeout is a success; the socket is closed at once (specs/l4-health.md §6.2).

import { connect } from 'node:net'
import { describeError, failure, SUCCESS, type ProbeOutcome } from './outcome.ts'

export function probeTcp(host: string, port: number, timeoutMs: number): Promise<ProbeOutcome> {
  return new Promise((resolve) => {
    const socket = connect({ host, port })
    const timer = setTimeout(() => {
      socket.destroy()
      resolve(failure(`dial tcp ${host}:${port}: i/o timeout`, 'MLT_HEALTH_TIMEOUT'))
    }, timeoutMs)
    socket.once('connect', () => {
      clearTimeout(timer)
      // resetAndDestroy would skip the FIN, but a plain close is what kubelet does and what servers expect.
      socket.destroy()
      resolve(SUCCESS)
    })
    socket.once('error', (err) => {
      clearTimeout(timer)
      socket.destroy()
      resolve(failure(`dial tcp ${host}:${port}: ${describeError(err)}`, 'MLT_HEALTH_CONNECT'))
    })
  })
}
