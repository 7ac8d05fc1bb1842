// The file provider's reading half: paths (files, directories, "-" for stdin) → documents → validated objects.
// Multi-document YAML, JSON and `List` kinds are accepted; directories are read recursively (*.yaml, *.yml, *.json,
// sorted, dot-entries skipped). The watching half is config/watch.ts; both share `parseManifestFile` and `mergeFiles`
// so `meshlet check` and `meshlet up` judge a manifest the same way.

import { readdir, readFile, stat } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { parseAllDocuments } from 'yaml'
import type { KubeObject, SourceRef } from '../model/objects.ts'
import type { ObjectError } from '../model/snapshot.ts'
import { ConfigError } from '../model/config-errors.ts'
import { validateDocument } from '../model/validate.ts'
import { isObj } from '../model/validate-common.ts'

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

/** Parses and validates one file's text. Never throws. */
export function parseManifestFile(text: string, file: string): FileLoad {
  const parseErrors: ObjectError[] = []
  const entries: DocEntry[] = []
  const ignoredKinds: string[] = []
  const parseError = (doc: number, message: string) =>
    parseErrors.push({ source: { file, doc }, object: null, path: '', code: 'MLT_CONFIG_PARSE', message })

  const docs: { value: unknown; doc: number }[] = []
  if (/\.json$/i.test(file)) {
    try {
      docs.push({ value: JSON.parse(text), doc: 1 })
    } catch (err) {
      parseError(1, `JSON syntax error: ${(err as Error).message}`)
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
    else entries.push({ source, id: r.id, object: r.object, errors: r.errors })
  }
  for (const { value, doc } of docs) {
    if (value === null || value === undefined) continue
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

export async function readStdin(): Promise<string> {
  const chunks: Buffer[] = []
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks).toString('utf8')
}

/** Reads one expanded file ("-" = stdin). Throws ConfigError MLT_CONFIG_UNREADABLE. */
export async function readManifestFile(file: string): Promise<FileLoad> {
  if (file === '-') return parseManifestFile(await readStdin(), STDIN_NAME)
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw unreadable(file, err)
  }
  return parseManifestFile(text, file)
}

/** Reads every path once (`meshlet check`, and the first load of `up`). */
export async function loadPaths(paths: readonly string[]): Promise<LoadResult> {
  const files = await expandPaths(paths)
  const loads: FileLoad[] = []
  for (const f of files) loads.push(await readManifestFile(f))
  return mergeFiles(loads)
}
