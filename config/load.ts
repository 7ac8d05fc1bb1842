// The file provider's reading half: paths (files, directories, "-" for stdin) → documents → validated objects.
// Multi-document YAML, JSON and `List` kinds are accepted; directories are read recursively (*.yaml, *.yml, *.json,
// sorted, dot-entries skipped). The watching half is config/watch.ts; both share `parseManifestFile` and `mergeFiles`
// so `meshlet check` and `meshlet up` judge a manifest the same way.
//
// Limits (model/validate-common.ts MANIFEST_LIMITS) are checked before the work they bound: a file's size before it is
// read whole, the nesting of flow collections (`[[[[…`) before the YAML parser sees the text, the nesting of the parsed
// value before it is validated. `meshlet up` runs parseManifestFile in a worker thread (config/manifest-parser.ts).

import { open, readdir, stat } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { parseAllDocuments } from 'yaml'
import type { KubeObject, SourceRef } from '../model/objects.ts'
import type { ObjectError } from '../model/snapshot.ts'
import { ConfigError } from '../model/config-errors.ts'
import { validateDocument } from '../model/validate.ts'
import { MANIFEST_LIMITS, isObj } from '../model/validate-common.ts'
import { duplicateJsonKeys, unknownFields } from './strict-fields.ts'

export interface LoadResult {
  /** Valid objects, first definition wins, in file then document order. */
  readonly objects: KubeObject[]
  readonly errors: ObjectError[]
  /** Kinds meshlet does not use ("apps/v1 Deployment"), each once. */
  readonly ignoredKinds: string[]
  /** Every file read, in order. */
  readonly files: string[]
}

/** One object-shaped document (or List item) after validation. */
export interface DocEntry {
  readonly source: SourceRef
  /** "Kind namespace/name" when readable, even for an invalid object (see ValidateResult.id). */
  readonly id: string | null
  readonly object: KubeObject | null
  readonly errors: ObjectError[]
}

/** One file after parsing and validation, before duplicates across files are resolved. */
export interface FileLoad {
  readonly file: string
  /** YAML/JSON syntax errors (MLT_CONFIG_PARSE). A file with any of them is "broken" for last-good purposes. */
  readonly parseErrors: ObjectError[]
  readonly entries: DocEntry[]
  readonly ignoredKinds: string[]
}

/** What a file is called in messages when it is standard input. */
export const STDIN_NAME = '<stdin>'

const MANIFEST_EXT = /\.(ya?ml|json)$/i

/** The error for a file over MANIFEST_LIMITS.fileBytes (`bytes` is what was seen, at least limit + 1). */
export function tooLargeError(file: string, bytes: number): ObjectError {
  const mib = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`
  return {
    source: { file, doc: 0 },
    object: null,
    path: '',
    code: 'MLT_CONFIG_LIMIT',
    message: `file is ${bytes > MANIFEST_LIMITS.fileBytes + 1 ? mib(bytes) : 'over 3 MiB'}: the limit is ${mib(MANIFEST_LIMITS.fileBytes)} per file (the Kubernetes API server's); split it into several files`,
  }
}

/** Parses and validates one file's text. Never throws. */
export function parseManifestFile(text: string, file: string): FileLoad {
  const parseErrors: ObjectError[] = []
  const entries: DocEntry[] = []
  const ignoredKinds: string[] = []
  const fail = (doc: number, path: string, code: 'MLT_CONFIG_PARSE' | 'MLT_CONFIG_LIMIT', message: string) =>
    parseErrors.push({ source: { file, doc }, object: null, path, code, message })
  const parseError = (doc: number, message: string) => fail(doc, '', 'MLT_CONFIG_PARSE', message)

  // Text handed over by a caller that did not read it through readBounded (stdin, tests, README examples).
  if (text.length > MANIFEST_LIMITS.fileBytes || Buffer.byteLength(text) > MANIFEST_LIMITS.fileBytes) {
    return { file, parseErrors: [tooLargeError(file, Buffer.byteLength(text))], entries, ignoredKinds }
  }
  const deepAt = flowNestingOver(text, MANIFEST_LIMITS.depth)
  if (deepAt !== null) {
    fail(0, '', 'MLT_CONFIG_LIMIT', `line ${deepAt}: nested deeper than ${MANIFEST_LIMITS.depth} levels`)
    return { file, parseErrors, entries, ignoredKinds }
  }

  const docs: { value: unknown; doc: number }[] = []
  if (/\.json$/i.test(file)) {
    try {
      docs.push({ value: JSON.parse(text), doc: 1 })
      const duplicates = duplicateJsonKeys(text, { file, doc: 1 })
      if (duplicates.length > 0) entries.push({ source: { file, doc: 1 }, id: null, object: null, errors: duplicates })
    } catch (err) {
      parseError(1, `JSON syntax error: ${jsonMessage((err as Error).message)}`)
    }
  } else {
    const stream = parseAllDocuments(text, { merge: true, uniqueKeys: true })
    const list = Array.isArray(stream) ? stream : []
    for (const [i, d] of list.entries()) {
      const doc = i + 1
      if (d.errors.length > 0) {
        for (const e of d.errors) parseError(doc, `YAML syntax error: ${firstLine(e.message)}`)
        continue
      }
      if (d.contents === null) continue // an empty document ("---" twice, a trailing "---")
      try {
        docs.push({ value: d.toJS({ maxAliasCount: 100 }), doc })
      } catch (err) {
        parseError(doc, `YAML error: ${firstLine((err as Error).message)}`)
      }
    }
  }

  const ignored = (k: string) => {
    if (!ignoredKinds.includes(k)) ignoredKinds.push(k)
  }
  const one = (value: unknown, source: SourceRef, prefix: string) => {
    const r = validateDocument(value, source, prefix)
    if (r.ignoredKind !== null) ignored(r.ignoredKind)
    // Unknown fields are warnings that travel with the object's errors (code MLT_CONFIG_UNKNOWN_FIELD; the object
    // stays valid): config/strict-fields.ts.
    else
      entries.push({
        source,
        id: r.id,
        object: r.object,
        errors: [...r.errors, ...unknownBeyond(r.errors, unknownFields(value, source, prefix, r.id))],
      })
  }
  for (const { value, doc } of docs) {
    if (value === null || value === undefined) continue
    const deep = pathDeeperThan(value, MANIFEST_LIMITS.depth)
    if (deep !== null) {
      fail(doc, deep, 'MLT_CONFIG_LIMIT', `nested deeper than ${MANIFEST_LIMITS.depth} levels`)
      continue
    }
    const source = { file, doc }
    const kind = isObj(value) && typeof value.kind === 'string' ? value.kind : null
    if (isObj(value) && kind !== null && kind.endsWith('List') && Array.isArray(value.items)) {
      // `kubectl get -o yaml` writes kind: List; the API's typed lists (ServiceList) leave kind out of their items.
      const itemKind = kind === 'List' ? null : kind.slice(0, -'List'.length)
      for (const [i, item] of value.items.entries()) {
        const filled =
          itemKind !== null && isObj(item) && item.kind === undefined
            ? { apiVersion: value.apiVersion, kind: itemKind, ...item }
            : item
        one(filled, source, `items[${i}]`)
      }
    } else {
      one(value, source, '')
    }
  }
  return { file, parseErrors, entries, ignoredKinds }
}

function firstLine(message: string): string {
  return (message.split('\n')[0] ?? '').replace(/:$/, '')
}

/**
 * V8's JSON messages quote the text around the error (`Unexpected token 'h', "…": "hunter2…" is not valid JSON`); that
 * text may be a Secret's value, and errors go to the log and /status, so the quote is dropped.
 */
function jsonMessage(message: string): string {
  const m = /^Unexpected token .*? is not valid JSON$/s.exec(message)
  return m === null ? message : 'unexpected token (the text around it is not shown)'
}

/**
 * The 1-based line where `[` / `{` flow collections nest deeper than `max`, or null. A cheap scan that never
 * under-counts a real flow collection: a bracket counts when it opens a value (after `:`, `-`, `,`, another opening
 * bracket or at the start of a line), and any closing bracket closes one. The YAML parser's time grows with flow
 * nesting (200 KB of `[` took 1.7 s), so this runs first; block nesting is bounded by pathDeeperThan after parsing.
 */
export function flowNestingOver(text: string, max: number): number | null {
  let depth = 0
  let line = 1
  let prev = 10 // the last character that was not a space or a tab; a newline counts as "start of line"
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === 32 || c === 9) continue
    if (c === 10) line++
    else if (c === 91 || c === 123) {
      // [ {
      if (prev === 10 || prev === 58 || prev === 45 || prev === 44 || prev === 91 || prev === 123) {
        if (++depth > max) return line
      }
    } else if ((c === 93 || c === 125) && depth > 0) depth--
    prev = c
  }
  return null
}

/** The field path (`spec.a[0].b…`, cut after 6 parts) where `value` nests deeper than `max`, or null. */
export function pathDeeperThan(value: unknown, max: number): string | null {
  const parts: string[] = []
  const walk = (v: unknown, depth: number): boolean => {
    if (typeof v !== 'object' || v === null) return false
    if (depth >= max) return true
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        if (walk(v[i], depth + 1)) {
          parts.push(`[${i}]`)
          return true
        }
      }
      return false
    }
    for (const [k, x] of Object.entries(v)) {
      if (walk(x, depth + 1)) {
        parts.push(`.${k}`)
        return true
      }
    }
    return false
  }
  if (!walk(value, 0)) return null
  parts.reverse()
  const shown = parts.slice(0, 6).join('').replace(/^\./, '')
  return parts.length > 6 ? `${shown}…` : shown
}

/**
 * Files → one LoadResult: duplicates (same kind, namespace and name) after the first are errors naming both places.
 */
export function mergeFiles(loads: readonly FileLoad[]): LoadResult {
  const objects: KubeObject[] = []
  const errors: ObjectError[] = []
  const ignoredKinds: string[] = []
  const seen = new Map<string, SourceRef>()
  for (const load of loads) {
    const start = errors.length
    errors.push(...load.parseErrors)
    for (const k of load.ignoredKinds) if (!ignoredKinds.includes(k)) ignoredKinds.push(k)
    for (const e of load.entries) {
      if (e.id !== null) {
        const first = seen.get(e.id)
        if (first !== undefined) {
          errors.push({
            source: e.source,
            object: e.id,
            path: '',
            code: 'MLT_CONFIG_CONFLICT',
            message: `defined twice: already defined in ${first.file} doc ${first.doc}; this definition is ignored`,
          })
          continue
        }
        seen.set(e.id, e.source)
      }
      errors.push(...e.errors)
      if (e.object !== null) objects.push(e.object)
    }
    // One file's errors in document order (syntax errors were collected first). sort() is stable.
    const mine = errors.splice(start).sort((a, b) => (a.source?.doc ?? 0) - (b.source?.doc ?? 0))
    errors.push(...mine)
  }
  return { objects, errors, ignoredKinds, files: loads.map((l) => l.file) }
}

/** Parses and validates one text (tests, README examples, stdin). */
export function loadManifestText(text: string, file: string): LoadResult {
  return mergeFiles([parseManifestFile(text, file)])
}

/**
 * Expands paths to the files they name: "-" stays "-", a directory becomes its manifest files (recursive, sorted),
 * a file is itself whatever its extension. Throws ConfigError MLT_CONFIG_UNREADABLE for a path that cannot be read.
 */
export async function expandPaths(paths: readonly string[]): Promise<string[]> {
  const out: string[] = []
  const seen = new Set<string>()
  const add = (f: string) => {
    const key = f === '-' ? '-' : resolve(f)
    if (seen.has(key)) return
    seen.add(key)
    out.push(f)
  }
  for (const p of paths) {
    if (p === '-') {
      add(p)
      continue
    }
    let st
    try {
      st = await stat(p)
    } catch (err) {
      throw unreadable(p, err)
    }
    if (st.isDirectory()) for (const f of await walk(p)) add(f)
    else add(p)
  }
  return out
}

async function walk(dir: string): Promise<string[]> {
  let names: string[]
  try {
    names = (await readdir(dir)).sort()
  } catch (err) {
    throw unreadable(dir, err)
  }
  const out: string[] = []
  for (const name of names) {
    // Dot-entries are skipped: editor temp files, and the "..data" links of a mounted ConfigMap would double every
    // object.
    if (name.startsWith('.')) continue
    const path = join(dir, name)
    let st
    try {
      st = await stat(path)
    } catch {
      continue // a dangling symlink, or a file removed while we list: nothing to read
    }
    if (st.isDirectory()) out.push(...(await walk(path)))
    else if (st.isFile() && MANIFEST_EXT.test(name)) out.push(path)
  }
  return out
}

export function unreadable(path: string, err: unknown): ConfigError {
  const reason = (err as NodeJS.ErrnoException)?.code ?? (err as Error)?.message ?? String(err)
  return new ConfigError('MLT_CONFIG_UNREADABLE', `cannot read ${path}: ${reason}`, { cause: err })
}

/** What a bounded read found: the text, or the number of bytes seen when that is over the limit. */
export type BoundedText = { readonly text: string } | { readonly tooLarge: number }

/** Standard input, up to the file size limit: beyond it the rest is not kept. */
export async function readStdin(): Promise<BoundedText> {
  const chunks: Buffer[] = []
  let bytes = 0
  for await (const chunk of process.stdin) {
    bytes += (chunk as Buffer).length
    if (bytes <= MANIFEST_LIMITS.fileBytes) chunks.push(chunk as Buffer)
  }
  return bytes > MANIFEST_LIMITS.fileBytes ? { tooLarge: bytes } : { text: Buffer.concat(chunks).toString('utf8') }
}

/**
 * Reads a file unless it is over the size limit: its size is checked before reading, and at most limit + 1 bytes are
 * read (the file may grow meanwhile). Throws what open/read throw (the caller turns it into MLT_CONFIG_UNREADABLE).
 */
export async function readBounded(file: string): Promise<BoundedText> {
  const fh = await open(file, 'r')
  try {
    const { size } = await fh.stat()
    if (size > MANIFEST_LIMITS.fileBytes) return { tooLarge: size }
    // size + 1, so that a file that grew after stat is noticed; it then gets a bigger buffer, up to limit + 1.
    let buf = Buffer.allocUnsafe(size + 1)
    let n = 0
    for (;;) {
      if (n === buf.length) {
        if (n > MANIFEST_LIMITS.fileBytes) return { tooLarge: n }
        const bigger = Buffer.allocUnsafe(Math.min(buf.length * 2, MANIFEST_LIMITS.fileBytes + 1))
        buf.copy(bigger, 0, 0, n)
        buf = bigger
      }
      const { bytesRead } = await fh.read(buf, n, buf.length - n, null)
      if (bytesRead === 0) break
      n += bytesRead
    }
    return { text: buf.toString('utf8', 0, n) }
  } finally {
    await fh.close()
  }
}

/** One bounded read → a FileLoad, the size error included (parsing happens here, on the calling thread). */
export function loadOf(read: BoundedText, file: string): FileLoad {
  if ('tooLarge' in read)
    return { file, parseErrors: [tooLargeError(file, read.tooLarge)], entries: [], ignoredKinds: [] }
  return parseManifestFile(read.text, file)
}

/** Reads one expanded file ("-" = stdin). Throws ConfigError MLT_CONFIG_UNREADABLE. */
export async function readManifestFile(file: string): Promise<FileLoad> {
  if (file === '-') return loadOf(await readStdin(), STDIN_NAME)
  let read: BoundedText
  try {
    read = await readBounded(file)
  } catch (err) {
    throw unreadable(file, err)
  }
  return loadOf(read, file)
}

/** Reads every path once (`meshlet check`, and the first load of `up`). */
export async function loadPaths(paths: readonly string[]): Promise<LoadResult> {
  const files = await expandPaths(paths)
  const loads: FileLoad[] = []
  for (const f of files) loads.push(await readManifestFile(f))
  return mergeFiles(loads)
}

/** Unknown-field warnings at paths validation already rejected (a forbidden field) would say the same thing twice. */
function unknownBeyond(errors: readonly ObjectError[], unknown: readonly ObjectError[]): readonly ObjectError[] {
  if (errors.length === 0 || unknown.length === 0) return unknown
  const said = new Set(errors.map((e) => e.path))
  return unknown.filter((u) => !said.has(u.path))
}
