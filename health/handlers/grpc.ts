// grpc: grpc.health.v1.Health/Check over plaintext HTTP/2 on a fresh connection, as kubelet's probe does
// (kubernetes pkg/probe/grpc). SERVING is a success; any other status, a non-zero grpc-status (Unimplemented
// included), the deadline or a connection error is a failure.
//
// The framing is small enough to write by hand: a 5-byte prefix (compressed flag, big-endian length) and a protobuf
// message. HealthCheckRequest is { string service = 1 }, HealthCheckResponse is { ServingStatus status = 1 }.

import { connect, constants, type ClientHttp2Session } from 'node:http2'
import { isIP } from 'node:net'
import { describeError, failure, KUBE_PROBE_USER_AGENT, SUCCESS, type ProbeOutcome } from './outcome.ts'

const STATUS_NAMES = ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN'] as const
const GRPC_UNIMPLEMENTED = 12
/** A health answer is a few bytes; anything much larger is not one. */
const MAX_RESPONSE_BYTES = 16 * 1024

/** The request frame: grpc prefix + HealthCheckRequest { service }. Built once per probe definition. */
export function healthCheckRequest(service: string): Buffer {
  const name = Buffer.from(service, 'utf8')
  const msg = name.length === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x0a]), varint(name.length), name])
  const frame = Buffer.alloc(5 + msg.length)
  frame.writeUInt8(0, 0)
  frame.writeUInt32BE(msg.length, 1)
  msg.copy(frame, 5)
  return frame
}

function varint(n: number): Buffer {
  const bytes: number[] = []
  while (n > 0x7f) {
    bytes.push((n & 0x7f) | 0x80)
    n >>>= 7
  }
  bytes.push(n)
  return Buffer.from(bytes)
}

/** Reads field 1 (varint) of a HealthCheckResponse; unknown fields are skipped. Null when the bytes do not parse. */
export function parseServingStatus(msg: Buffer): number | null {
  let i = 0
  let status = 0 // proto3 default: UNKNOWN
  const readVarint = (): number | null => {
    let result = 0
    let shift = 0
    while (i < msg.length && shift < 35) {
      const b = msg[i++]!
      result |= (b & 0x7f) << shift
      if ((b & 0x80) === 0) return result >>> 0
      shift += 7
    }
    return null
  }
  while (i < msg.length) {
    const tag = readVarint()
    if (tag === null) return null
    const field = tag >>> 3
    const wire = tag & 7
    if (wire === 0) {
      const v = readVarint()
      if (v === null) return null
      if (field === 1) status = v
    } else if (wire === 2) {
      const len = readVarint()
      if (len === null || i + len > msg.length) return null
      i += len
    } else if (wire === 5) i += 4
    else if (wire === 1) i += 8
    else return null
  }
  return i === msg.length ? status : null
}

export function probeGrpc(host: string, port: number, request: Buffer, timeoutMs: number): Promise<ProbeOutcome> {
  const authority = `${isIP(host) === 6 ? `[${host}]` : host}:${port}`
  return new Promise((resolve) => {
    let settled = false
    let session: ClientHttp2Session | null = null
    const done = (r: ProbeOutcome) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      session?.destroy()
      resolve(r)
    }
    const timer = setTimeout(
      () => done(failure(`timeout: health rpc did not complete within ${timeoutMs / 1000}s`, 'MLT_HEALTH_TIMEOUT')),
      timeoutMs,
    )
    session = connect(`http://${authority}`)
    session.on('error', (err) =>
      done(failure(`error: failed to connect service "${authority}": ${describeError(err)}`, 'MLT_HEALTH_CONNECT')),
    )
    const stream = session.request({
      [constants.HTTP2_HEADER_METHOD]: 'POST',
      [constants.HTTP2_HEADER_PATH]: '/grpc.health.v1.Health/Check',
      [constants.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc',
      [constants.HTTP2_HEADER_TE]: 'trailers',
      [constants.HTTP2_HEADER_USER_AGENT]: KUBE_PROBE_USER_AGENT,
      'grpc-timeout': `${timeoutMs}m`,
    })
    const chunks: Buffer[] = []
    let size = 0
    let grpcStatus: string | null = null
    let grpcMessage = ''
    const takeStatus = (h: Record<string, unknown>) => {
      if (h['grpc-status'] !== undefined) grpcStatus = String(h['grpc-status'])
      if (h['grpc-message'] !== undefined) grpcMessage = decodeURIComponent(String(h['grpc-message']))
    }
    stream.on('response', (h) => takeStatus(h))
    stream.on('trailers', (h) => takeStatus(h))
    stream.on('data', (c: Buffer) => {
      size += c.length
      if (size > MAX_RESPONSE_BYTES) return done(failure('health response too large', 'MLT_HEALTH_PROTOCOL'))
      chunks.push(c)
    })
    stream.on('error', (err) => done(failure(`error: health rpc failed: ${describeError(err)}`, 'MLT_HEALTH_CONNECT')))
    stream.on('close', () => {
      if (grpcStatus === null) return done(failure('health rpc ended without grpc-status', 'MLT_HEALTH_PROTOCOL'))
      if (grpcStatus !== '0') {
        if (Number(grpcStatus) === GRPC_UNIMPLEMENTED) {
          return done(
            failure(`this server does not implement the grpc health protocol (grpc.health.v1.Health): ${grpcMessage}`),
          )
        }
        return done(failure(`health rpc failed with grpc-status ${grpcStatus}${grpcMessage ? `: ${grpcMessage}` : ''}`))
      }
      const body = Buffer.concat(chunks)
      if (body.length < 5 || body.readUInt8(0) !== 0 || body.readUInt32BE(1) !== body.length - 5) {
        return done(failure('malformed health response frame', 'MLT_HEALTH_PROTOCOL'))
      }
      const status = parseServingStatus(body.subarray(5))
      if (status === null) return done(failure('malformed HealthCheckResponse', 'MLT_HEALTH_PROTOCOL'))
      if (status === 1) return done(SUCCESS)
      done(failure(`service unhealthy (responded with "${STATUS_NAMES[status] ?? status}")`))
    })
    stream.end(request)
  })
}
