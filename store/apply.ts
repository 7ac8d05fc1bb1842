// `meshlet apply -f PATH` and `meshlet delete -f PATH`: the files are judged exactly as `meshlet check` judges them
// (the same parse, validation and Ingress checks); only when every object is valid are they written, all in one etcd
// transaction, so a node never sees half of an apply. Each object is stored as the JSON of its manifest document, so
// nodes validate what a file would have given them (a newer meshlet reading an older one's keys included).

import { parseAllDocuments } from 'yaml'
import type { KubeObject } from '../model/objects.ts'
import { validateDocument } from '../model/validate.ts'
import { isObj } from '../model/validate-common.ts'
import type { ObjectError } from '../model/snapshot.ts'
import {
  expandPaths,
  loadOf,
  mergeFiles,
  readBounded,
  readStdin,
  STDIN_NAME,
  unreadable,
  type BoundedText,
} from '../config/load.ts'
import { checkIngresses } from '../proxy/check.ts'
import { StoreError } from './errors.ts'
import { objectKey } from './keys.ts'

export interface Judged {
  /** check's verdict, one line each (formatted as `meshlet check` prints them); empty = valid. */
  readonly problems: readonly (ObjectError | string)[]
  /** key → manifest document (JSON), in file and document order. */
  readonly writes: ReadonlyMap<string, string>
  readonly ignoredKinds: readonly string[]
}

async function readAll(paths: readonly string[]): Promise<{ name: string; read: BoundedText }[]> {
  const out: { name: string; read: BoundedText }[] = []
  for (const f of await expandPaths(paths)) {
    if (f === '-') {
      out.push({ name: STDIN_NAME, read: await readStdin() })
      continue
    }
    try {
      out.push({ name: f, read: await readBounded(f) })
    } catch (err) {
      throw unreadable(f, err)
    }
  }
  return out
}

/** The documents of a valid file as parseManifestFile sees them (typed List items get their kind). */
function documents(text: string, file: string): unknown[] {
  let values: unknown[]
  if (/\.json$/i.test(file)) values = [JSON.parse(text)]
  else
    values = parseAllDocuments(text, { merge: true, uniqueKeys: true })
      .filter((d) => d.contents !== null)
      .map((d) => d.toJS({ maxAliasCount: 100 }) as unknown)
  const out: unknown[] = []
  for (const value of values) {
    if (value === null || value === undefined) continue
    const kind = isObj(value) && typeof value.kind === 'string' ? value.kind : null
    if (isObj(value) && kind !== null && kind.endsWith('List') && Array.isArray(value.items)) {
      const itemKind = kind === 'List' ? null : kind.slice(0, -'List'.length)
      for (const item of value.items as unknown[])
        out.push(
          itemKind !== null && isObj(item) && item.kind === undefined
            ? { apiVersion: value.apiVersion, kind: itemKind, ...item }
            : item,
        )
    } else out.push(value)
  }
  return out
}

/** Reads and judges the files as `meshlet check` does; when valid, also the key and value of every object. */
export async function judge(paths: readonly string[], ingressClass: string, prefix: string): Promise<Judged> {
  const files = await readAll(paths)
  const result = mergeFiles(files.map((f) => loadOf(f.read, f.name)))
  const problems: (ObjectError | string)[] = [...result.errors]
  for (const p of checkIngresses(result.objects, ingressClass))
    for (const why of p.reasons) problems.push(`${p.source} (Ingress ${p.ingress}): ${why}`)
  const writes = new Map<string, string>()
  if (problems.length > 0) return { problems, writes, ignoredKinds: result.ignoredKinds }
  for (const f of files) {
    if (!('text' in f.read)) continue
    for (const doc of documents(f.read.text, f.name)) {
      const r = validateDocument(doc, { file: f.name, doc: 0 })
      if (r.object === null) continue // an ignored kind: check said so, nothing to store
      const d = doc as { apiVersion: string }
      writes.set(objectKey(prefix, d.apiVersion, r.object as KubeObject), JSON.stringify(doc))
    }
  }
  return { problems, writes, ignoredKinds: result.ignoredKinds }
}

export function unreachable(err: unknown): StoreError {
  return new StoreError(
    'MLT_STORE_UNREACHABLE',
    `etcd: ${(err as Error).message ?? String(err)}; nothing was written`,
    {
      cause: err,
    },
  )
}
