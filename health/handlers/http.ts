// httpGet with kubelet's semantics (specs/l4-health.md §6.2, kubernetes pkg/probe/http): a fresh connection per probe
// (`Connection: close`), kube-probe User-Agent, success on 200..399, same-hostname redirects followed (at most 10), a
// redirect to another host not followed and counted as a success with a warning, at most 10 KiB of body read, and one
// deadline over the whole attempt (redirects included).
//
// The client is a small hand-written HTTP/1.1 reader over net/tls rather than node:http: a probe needs the status
// line, one header (Location) and a bounded body, and 1,000 probes a second through node:http's agent machinery cost
// several times the CPU (bench/health.ts).

import { connect as netConnect, isIP, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import type { HttpHeader } from '../../model/objects.ts'
import {
  describeError,
  failure,
  KUBE_PROBE_USER_AGENT,
  MAX_BODY_BYTES,
  success,
  SUCCESS,
  warning,
  type ProbeOutcome,
} from './outcome.ts'

const MAX_REDIRECTS = 10
/** A response head larger than this is a protocol error (Go's default MaxResponseHeaderBytes is 1 MiB; probes answer small heads). */
const MAX_HEAD_BYTES = 64 * 1024
const CRLFCRLF = Buffer.from('\r\n\r\n')

export interface HttpProbeSpec {
  readonly scheme: 'HTTP' | 'HTTPS'
  /** Where to connect: the probe's host, or the Pod IP. */
  readonly host: string
  readonly port: number
  readonly path: string
  readonly httpHeaders: readonly HttpHeader[]
}

interface Target {
  readonly tls: boolean
  readonly hostname: string
  readonly port: number
  /** path + query as sent on the request line */
  readonly target: string
}

interface Answer {
  readonly status: number
  readonly location: string | null
}

/** Precomputes what every attempt of one probe shares; `run` is then called once per tick. */
export class HttpProbe {
  readonly #first: Target
  /** Header lines after Host, each ending in CRLF: the user's headers, then the defaults they did not override. */
  readonly #headerBlock: string
  /** A Host header given in httpHeaders; kubelet sets req.Host from it. */
  readonly #hostOverride: string | null

  constructor(spec: HttpProbeSpec) {
    const path = spec.path.startsWith('/') ? spec.path : `/${spec.path}`
    this.#first = { tls: spec.scheme === 'HTTPS', hostname: spec.host, port: spec.port, target: path }
    let block = ''
    let host: string | null = null
    let ua = true
    let accept = true
    for (const h of spec.httpHeaders) {
      const lower = h.name.toLowerCase()
      // A header given with an empty value removes kubelet's default and is not sent (Go drops an empty User-Agent).
      if (lower === 'user-agent') {
        ua = false
        if (h.value === '') continue
      }
      if (lower === 'accept') {
        accept = false
        if (h.value === '') continue
      }
      if (lower === 'host') {
        host = h.value
        continue
      }
      if (lower === 'connection') continue
      block += `${h.name}: ${h.value}\r\n`
    }
    if (ua) block += `User-Agent: ${KUBE_PROBE_USER_AGENT}\r\n`
    if (accept) block += 'Accept: */*\r\n'
    block += 'Connection: close\r\n\r\n'
    this.#headerBlock = block
    this.#hostOverride = host
  }

  async run(timeoutMs: number): Promise<ProbeOutcome> {
    const deadline = Date.now() + timeoutMs
    let target = this.#first
    for (let redirects = 0; ; redirects++) {
      const remaining = deadline - Date.now()
      if (remaining <= 0) return failure(`Get "${urlOf(target)}": context deadline exceeded`, 'MLT_HEALTH_TIMEOUT')
      const host =
        this.#hostOverride !== null && target.hostname === this.#first.hostname ? this.#hostOverride : authority(target)
      const head = `GET ${target.target} HTTP/1.1\r\nHost: ${host}\r\n${this.#headerBlock}`
      let answer: Answer
      try {
        answer = await exchange(target, head, remaining)
      } catch (err) {
        const e = err as ProbeFailure
        return failure(`Get "${urlOf(target)}": ${e.message}`, e.code ?? 'MLT_HEALTH_CONNECT')
      }
      const { status, location } = answer
      if (isFollowedRedirect(status) && location !== null) {
        let next: URL
        try {
          next = new URL(location, urlOf(target))
        } catch {
          return status < 400 ? SUCCESS : failure(`HTTP probe failed with statuscode: ${status}`)
        }
        const nextHost = stripBrackets(next.hostname)
        if (nextHost !== target.hostname || (next.protocol !== 'http:' && next.protocol !== 'https:')) {
          // kubelet: a redirect off the original host is not followed; the 3xx itself is the (warning) answer.
          return warning(`Probe terminated redirects, Location: ${location.slice(0, 200)}`)
        }
        if (redirects + 1 > MAX_REDIRECTS) {
          return failure(
            `Get "${location.slice(0, 200)}": stopped after ${MAX_REDIRECTS} redirects`,
            'MLT_HEALTH_REDIRECTS',
          )
        }
        const tls = next.protocol === 'https:'
        target = {
          tls,
          hostname: nextHost,
          port: next.port ? Number(next.port) : tls ? 443 : 80,
          target: `${next.pathname}${next.search}`,
        }
        continue
      }
      if (status >= 200 && status < 400)
        return status === 200 ? SUCCESS : success(`HTTP probe succeeded with statuscode: ${status}`)
      return failure(`HTTP probe failed with statuscode: ${status}`)
    }
  }
}

/** The redirects Go's client follows; any other 3xx is an answer in itself. */
function isFollowedRedirect(status: number): boolean {
  return status === 301 || status === 302 || status === 303 || status === 307 || status === 308
}

function stripBrackets(h: string): string {
  return h.startsWith('[') ? h.slice(1, -1) : h
}

function authority(t: Target): string {
  const h = isIP(t.hostname) === 6 ? `[${t.hostname}]` : t.hostname
  return (t.tls ? t.port === 443 : t.port === 80) ? h : `${h}:${t.port}`
}

function urlOf(t: Target): string {
  return `${t.tls ? 'https' : 'http'}://${authority(t)}${t.target}`
}

interface ProbeFailure extends Error {
  code?: 'MLT_HEALTH_TIMEOUT' | 'MLT_HEALTH_CONNECT' | 'MLT_HEALTH_PROTOCOL'
}

function probeFailure(message: string, code: NonNullable<ProbeFailure['code']>): ProbeFailure {
  const e: ProbeFailure = new Error(message)
  e.code = code
  return e
}

/**
 * One request on a fresh connection. Resolves once the head is parsed and the body has ended, reached its length or
 * 10 KiB (more is discarded, which is not a failure); rejects on a transport error, a malformed head or the deadline.
 */
function exchange(t: Target, head: string, timeoutMs: number): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const socket: Socket = t.tls
      ? tlsConnect({
          host: t.hostname,
          port: t.port,
          rejectUnauthorized: false,
          servername: isIP(t.hostname) ? undefined : t.hostname,
        })
      : netConnect({ host: t.hostname, port: t.port })
    let settled = false
    let buf: Buffer | null = null
    let answer: Answer | null = null
    let bodyWanted = 0 // bytes of body still to read; -1 until the end of the stream; -2 chunked
    let bodySeen = 0
    const finish = (err: ProbeFailure | null) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.destroy()
      if (err) reject(err)
      else resolve(answer!)
    }
    const timer = setTimeout(
      () =>
        finish(
          probeFailure(
            'context deadline exceeded (Client.Timeout exceeded while awaiting headers)',
            'MLT_HEALTH_TIMEOUT',
          ),
        ),
      timeoutMs,
    )
    socket.once(t.tls ? 'secureConnect' : 'connect', () => socket.write(head))
    socket.on('error', (err) => finish(probeFailure(describeError(err), 'MLT_HEALTH_CONNECT')))
    socket.on('end', () => {
      if (answer) finish(null)
      else finish(probeFailure('EOF before a complete response head', 'MLT_HEALTH_CONNECT'))
    })
    socket.on('data', (chunk: Buffer) => {
      if (answer) return onBody(chunk)
      buf = buf ? Buffer.concat([buf, chunk]) : chunk
      for (;;) {
        const end = buf.indexOf(CRLFCRLF)
        if (end < 0) {
          if (buf.length > MAX_HEAD_BYTES) finish(probeFailure('response head too large', 'MLT_HEALTH_PROTOCOL'))
          return
        }
        const parsed = parseHead(buf.toString('latin1', 0, end))
        if (parsed === null) return finish(probeFailure('malformed HTTP response', 'MLT_HEALTH_PROTOCOL'))
        const rest = buf.subarray(end + 4)
        if (parsed.status >= 100 && parsed.status < 200) {
          // 100 Continue and friends precede the real answer.
          buf = rest
          continue
        }
        answer = { status: parsed.status, location: parsed.location }
        if (parsed.status === 204 || parsed.status === 304) return finish(null)
        bodyWanted = parsed.chunked ? -2 : (parsed.contentLength ?? -1)
        if (bodyWanted === 0) return finish(null)
        if (rest.length > 0) onBody(rest)
        return
      }
    })
    function onBody(chunk: Buffer): void {
      bodySeen += chunk.length
      if (bodySeen >= MAX_BODY_BYTES) return finish(null)
      if (bodyWanted >= 0 && bodySeen >= bodyWanted) return finish(null)
      // Chunked: the zero-length last chunk ends the body (trailers are not expected from probe targets).
      if (bodyWanted === -2 && endsChunked(chunk)) return finish(null)
    }
  })
}

const LAST_CHUNK = Buffer.from('0\r\n\r\n')

function endsChunked(chunk: Buffer): boolean {
  if (chunk.length < 5) return chunk.equals(LAST_CHUNK.subarray(5 - chunk.length))
  return chunk.subarray(chunk.length - 5).equals(LAST_CHUNK)
}

interface Head {
  readonly status: number
  readonly location: string | null
  readonly contentLength: number | null
  readonly chunked: boolean
}

function parseHead(text: string): Head | null {
  const lines = text.split('\r\n')
  const m = /^HTTP\/1\.[01] (\d{3})(?: |$)/.exec(lines[0] ?? '')
  if (!m) return null
  let location: string | null = null
  let contentLength: number | null = null
  let chunked = false
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!
    const colon = line.indexOf(':')
    if (colon <= 0) return null
    const name = line.slice(0, colon).toLowerCase()
    const value = line.slice(colon + 1).trim()
    if (name === 'location') location = value
    else if (name === 'content-length') {
      const n = Number(value)
      if (!Number.isInteger(n) || n < 0) return null
      contentLength = n
    } else if (name === 'transfer-encoding') chunked = value.toLowerCase().includes('chunked')
  }
  return { status: Number(m[1]), location, contentLength: chunked ? null : contentLength, chunked }
}
