// The parser binding of the raw engine: Node's own llhttp binding (the parser node:http uses, strict mode), reached
// through the undocumented `_http_common` module, with a pool of parsers as node:http keeps one. The parser calls
// back into its owner (a Downstream or an UpstreamConn) through `ParserOwner`, so this file knows neither.
// Without `_http_common` the http listener uses the node:http engine (`rawEngineAvailable`).

import { createRequire } from 'node:module'

export interface ParseError extends Error {
  code: string
  bytesParsed: number
}

export interface Parser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void
  execute(data: Buffer): number | ParseError
  finish(): number | ParseError | undefined
  close(): void
  free(): void
  /** Reads straight from a stream handle in C++ (node:http does this): no 'data' events, kOnExecute per read. */
  consume(handle: object): void
  unconsume(): void
  getCurrentBuffer(): Buffer
  [k: number]: unknown
  /** Ours: the Downstream or UpstreamConn the parser belongs to, and the parser type. */
  owner: ParserOwner | null
  type: number
}

interface ParserClass {
  new (): Parser
  readonly REQUEST: number
  readonly RESPONSE: number
  readonly kOnMessageBegin: number
  readonly kOnHeaders: number
  readonly kOnHeadersComplete: number
  readonly kOnBody: number
  readonly kOnMessageComplete: number
  readonly kOnExecute: number
}

/** The libuv stream handle of a net.Socket (internal; used only when it says it is a StreamBase). */
export interface StreamHandle {
  isStreamBase?: boolean
  _consumed?: boolean
  readStart(): number
  readStop(): number
}

/** `_http_common` is an undocumented Node module; without it the http listener uses the node:http engine. */
function loadParser(): { HTTPParser: ParserClass; methods: string[] } | null {
  try {
    const common = createRequire(import.meta.url)('_http_common') as { HTTPParser?: ParserClass; methods?: string[] }
    if (typeof common.HTTPParser !== 'function' || !Array.isArray(common.methods)) return null
    const p = new common.HTTPParser()
    if (typeof p.initialize !== 'function' || typeof p.execute !== 'function') return null
    return { HTTPParser: common.HTTPParser, methods: common.methods }
  } catch {
    return null
  }
}

const binding = loadParser()
/** Whether the raw engine can run on this Node. */
export const rawEngineAvailable = binding !== null

/** llhttp method ids → names: 0..33 are the HTTP methods in `methods` order, 46 is QUERY; the rest are RTSP. */
export const METHODS: (string | undefined)[] = []
if (binding !== null) {
  for (let i = 0; i < 34 && i < binding.methods.length; i++) METHODS[i] = binding.methods[i]
  METHODS[46] = 'QUERY'
}

/**
 * Parsers are kept for reuse like node:http does (its FreeList of 1000): making one costs more than a request. A
 * parser is only closed (its native memory freed) outside its own callbacks, hence the setImmediate.
 */
const requestParsers: Parser[] = []
const responseParsers: Parser[] = []
const PARSER_POOL_MAX = 1000

export function takeParser(type: number, owner: ParserOwner, maxHeaderSize: number): Parser {
  const pool = type === binding!.HTTPParser.REQUEST ? requestParsers : responseParsers
  const p = pool.pop() ?? newParser(type)
  p.initialize(type, {}, maxHeaderSize, 0)
  p.owner = owner
  return p
}

function newParser(type: number): Parser {
  const P = binding!.HTTPParser
  const p = new P()
  p.type = type
  // Each callback is a crossing from C++ into JS: a response parser does without message-begin.
  if (type === P.REQUEST) p[P.kOnMessageBegin] = onMessageBegin
  p[P.kOnHeaders] = onHeaders
  p[P.kOnHeadersComplete] = onHeadersComplete
  p[P.kOnBody] = onBody
  p[P.kOnMessageComplete] = onMessageComplete
  p[P.kOnExecute] = onExecute
  return p
}

function closeParser(p: Parser): void {
  p.close()
}

export function giveBackParser(p: Parser): void {
  p.owner = null
  p.free()
  const pool = p.type === binding!.HTTPParser.REQUEST ? requestParsers : responseParsers
  if (pool.length < PARSER_POOL_MAX) pool.push(p)
  else setImmediate(closeParser, p)
}

/** What a parser calls back, by callback; `this` of each parser callback is the parser, its owner gets the call. */
export interface ParserOwner {
  onParserMessageBegin(): void
  /** kOnHeaders: part of a head with more than 32 header lines (the rest comes with kOnHeadersComplete). */
  onParserHeaders(headers: string[], url: string): void
  onParserHeadersComplete(
    major: number,
    minor: number,
    headers: string[] | undefined,
    method: number,
    url: string | undefined,
    status: number,
    upgrade: boolean,
    keepAlive: boolean,
  ): number
  onParserBody(chunk: Buffer): void
  onParserMessageComplete(): void
  /** kOnExecute: one read, consumed from the socket's handle, was parsed. */
  onParserExecute(r: number | ParseError): void
}

/** The parser type ids of the binding (0 where it does not load: the raw engine is then never started). */
export const PARSER_REQUEST = binding?.HTTPParser.REQUEST ?? 0
export const PARSER_RESPONSE = binding?.HTTPParser.RESPONSE ?? 0

// Parser callbacks: one set for both parser types (pooled parsers change owner); `this` is the parser.

function onMessageBegin(this: Parser): void {
  this.owner?.onParserMessageBegin()
}

function onHeaders(this: Parser, headers: string[], url: string): void {
  this.owner?.onParserHeaders(headers, url)
}

function onHeadersComplete(
  this: Parser,
  major: number,
  minor: number,
  headers: string[] | undefined,
  method: number,
  url: string | undefined,
  status: number,
  _statusMessage: string,
  upgrade: boolean,
  keepAlive: boolean,
): number {
  const o = this.owner
  return o === null ? 0 : o.onParserHeadersComplete(major, minor, headers, method, url, status, upgrade, keepAlive)
}

function onExecute(this: Parser, r: number | ParseError): void {
  this.owner?.onParserExecute(r)
}

function onBody(this: Parser, chunk: Buffer): void {
  this.owner?.onParserBody(chunk)
}

function onMessageComplete(this: Parser): void {
  this.owner?.onParserMessageComplete()
}
