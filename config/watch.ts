// The file provider's watching half: reads the paths once at start, then watches them and pushes every changed
// configuration to `onUpdate` (Traefik's provider → one message with the whole configuration).
//
// Last good state survives a bad edit (STYLE.md §8, CoreDNS reload):
//   - a file that no longer parses keeps the objects it had; its syntax error is logged once and shown in status();
//   - an object that fails validation keeps its last good version; its errors stay reported until it is fixed;
//   - a fixed file clears its errors; an object removed from a file, or a file removed from a watched directory, goes.
// A path named with -f that disappears keeps its objects (editors replace files by rename; a file briefly missing
// must not empty the configuration) and reports the read error until it is back.
//
// Watching: fs.watch with `recursive` on directories; a single file is watched through its parent directory, filtered
// by name, because a watch on the file itself follows the old inode when an editor renames a new file over it.
// Events are coalesced (debounceMs) and every reload re-reads the files, comparing text, so a burst of events or an
// event for an unrelated file costs a read, not a rebuild.

import { statSync, watch, type FSWatcher } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { basename, dirname } from 'node:path'
import type { Logger } from 'pino'
import type { KubeObject } from '../model/objects.ts'
import type { ObjectError } from '../model/snapshot.ts'
import { formatObjectError } from '../model/validate.ts'
import {
  STDIN_NAME,
  expandPaths,
  mergeFiles,
  parseManifestFile,
  readManifestFile,
  unreadable,
  type DocEntry,
  type FileLoad,
} from './load.ts'

export interface ManifestSourceOptions {
  readonly log: Logger
  /** The whole configuration in force: every object (last good versions included) and every current error. */
  readonly onUpdate: (objects: KubeObject[], errors: ObjectError[]) => void
  /** Events within this many milliseconds make one reload. Default 100. */
  readonly debounceMs?: number
}

export interface FileStatus {
  readonly file: string
  /** Objects this file contributes now (last good versions included). */
  readonly objects: number
  /** Errors currently reported for this file (syntax, read, validation). */
  readonly errors: number
  /** The first of them, as one line; null when the file is clean. */
  readonly lastError: string | null
  /** When the file's content last changed (ISO time). */
  readonly changedAt: string
}

export interface ReloadRecord {
  readonly time: string
  /** true when the configuration has no errors after this reload. */
  readonly ok: boolean
  readonly objects: number
  readonly errors: number
  /** Files whose content changed (or that appeared or went). */
  readonly changed: readonly string[]
  /** The errors as lines (at most 20). */
  readonly messages: readonly string[]
}

export interface SourceStatus {
  readonly paths: readonly string[]
  readonly files: readonly FileStatus[]
  readonly ignoredKinds: readonly string[]
  /** The last 20 reloads, newest last. */
  readonly reloads: readonly ReloadRecord[]
}

interface FileState {
  readonly file: string
  /** Text last read; null when the last read failed. */
  text: string | null
  /** Entries in force: valid objects, last good versions of invalid ones, and their errors. */
  entries: DocEntry[]
  /** Syntax or read errors in force for the whole file. */
  fileErrors: ObjectError[]
  ignoredKinds: string[]
  changedAt: number
}

const HISTORY = 20

export class ManifestSource {
  readonly #paths: readonly string[]
  readonly #log: Logger
  readonly #onUpdate: ManifestSourceOptions['onUpdate']
  readonly #debounceMs: number
  /** File → state, in load order. */
  #files = new Map<string, FileState>()
  /** For each -f path, the files it expanded to last time (kept when it cannot be listed). */
  #expanded = new Map<string, string[]>()
  #watchers = new Map<string, FSWatcher>()
  #history: ReloadRecord[] = []
  #ignoredKinds: string[] = []
  /** Every error of the last published configuration. */
  #errors: ObjectError[] = []
  #objects: KubeObject[] = []
  #timer: NodeJS.Timeout | null = null
  #retryTimer: NodeJS.Timeout | null = null
  #reloading = false
  #again = false
  #closed = false

  constructor(paths: readonly string[], options: ManifestSourceOptions) {
    this.#paths = paths
    this.#log = options.log
    this.#onUpdate = options.onUpdate
    this.#debounceMs = options.debounceMs ?? 100
  }

  /** First load: throws ConfigError MLT_CONFIG_UNREADABLE when a path cannot be read. Calls onUpdate once. */
  async start(): Promise<void> {
    for (const p of this.#paths) this.#expanded.set(p, await expandPaths([p]))
    // Watch before the first read, so an edit made while reading is not missed; events wait until start is done.
    this.#reloading = true
    try {
      for (const p of this.#paths) if (p !== '-') this.#watchPath(p)
      await this.#initialLoad()
    } catch (err) {
      this.close()
      throw err
    } finally {
      this.#reloading = false
    }
    if (this.#again) {
      this.#again = false
      this.#schedule()
    }
  }

  async #initialLoad(): Promise<void> {
    const now = Date.now()
    for (const file of this.#allFiles()) {
      // stdin is read once here and never again; files keep their text for change detection.
      let text = ''
      let load: FileLoad
      if (file === '-') load = await readManifestFile(file)
      else {
        try {
          text = await readFile(file, 'utf8')
        } catch (err) {
          throw unreadable(file, err)
        }
        load = parseManifestFile(text, file)
      }
      const st: FileState = { file, text, entries: [], fileErrors: [], ignoredKinds: [], changedAt: now }
      this.#apply(st, load)
      this.#files.set(file, st)
      for (const err of this.#errorsOf(st)) this.#log.warn({ file, code: err.code }, formatObjectError(err))
    }
    this.#publish([...this.#files.keys()], true)
  }

  close(): void {
    this.#closed = true
    if (this.#timer) clearTimeout(this.#timer)
    if (this.#retryTimer) clearTimeout(this.#retryTimer)
    this.#timer = null
    this.#retryTimer = null
    for (const w of this.#watchers.values()) w.close()
    this.#watchers.clear()
  }

  status(): SourceStatus {
    const files: FileStatus[] = []
    for (const st of this.#files.values()) {
      // The errors in force for this file as published: its own, plus conflicts with objects of other files.
      const name = st.file === '-' ? STDIN_NAME : st.file
      const errors = this.#errors.filter((e) => e.source?.file === name)
      files.push({
        file: name,
        objects: this.#objects.filter((o) => o.meta.source.file === name).length,
        errors: errors.length,
        lastError: errors[0] ? formatObjectError(errors[0]) : null,
        changedAt: new Date(st.changedAt).toISOString(),
      })
    }
    return { paths: [...this.#paths], files, ignoredKinds: [...this.#ignoredKinds], reloads: [...this.#history] }
  }

  /** Re-reads now (tests; also what a watch event ends in). */
  async reload(): Promise<void> {
    if (this.#closed) return
    if (this.#reloading) {
      this.#again = true
      return
    }
    this.#reloading = true
    try {
      do {
        this.#again = false
        await this.#reloadOnce()
      } while (this.#again && !this.#closed)
    } finally {
      this.#reloading = false
    }
  }

  // ------------------------------------------------------------------ internals

  #allFiles(): string[] {
    const out: string[] = []
    for (const p of this.#paths) for (const f of this.#expanded.get(p) ?? []) if (!out.includes(f)) out.push(f)
    return out
  }

  #schedule(): void {
    if (this.#closed || this.#timer) return
    this.#timer = setTimeout(() => {
      this.#timer = null
      this.reload().catch((err: unknown) => this.#log.error({ err }, 'manifest reload failed'))
    }, this.#debounceMs)
  }

  async #reloadOnce(): Promise<void> {
    // Re-list: a directory may have new or fewer files. A path that cannot be listed keeps its last list.
    for (const p of this.#paths) {
      if (p === '-') continue
      try {
        this.#expanded.set(p, await expandPaths([p]))
      } catch {
        // Reported per file below (each of its files fails to read).
      }
    }
    const wanted = this.#allFiles()
    const changed: string[] = []
    const next = new Map<string, FileState>()
    for (const file of wanted) {
      const prev = this.#files.get(file)
      if (file === '-') {
        if (prev) next.set(file, prev)
        continue
      }
      let text: string | null = null
      let readErr: unknown = null
      try {
        text = await readFile(file, 'utf8')
      } catch (err) {
        readErr = err
      }
      const st: FileState = prev ?? {
        file,
        text: null,
        entries: [],
        fileErrors: [],
        ignoredKinds: [],
        changedAt: Date.now(),
      }
      if (text === null) {
        const e = unreadable(file, readErr)
        const msg: ObjectError = { source: { file, doc: 0 }, object: null, path: '', code: e.code, message: e.message }
        if (st.text !== null || st.fileErrors[0]?.message !== msg.message) {
          // The file's objects stay (last good); only the error is new.
          st.text = null
          st.fileErrors = [msg]
          st.entries = st.entries.filter((d) => d.object !== null).map((d) => ({ ...d, errors: [] }))
          st.changedAt = Date.now()
          changed.push(file)
          this.#log.warn({ file, code: e.code }, `${e.message}; keeping its last good objects`)
        }
      } else if (text !== st.text || !prev) {
        st.text = text
        st.changedAt = Date.now()
        this.#apply(st, parseManifestFile(text, file))
        changed.push(file)
        for (const err of this.#errorsOf(st)) this.#log.warn({ file, code: err.code }, formatObjectError(err))
      }
      next.set(file, st)
    }
    for (const file of this.#files.keys()) if (!next.has(file)) changed.push(file)
    if (this.#closed || changed.length === 0) return
    this.#files = next
    for (const p of this.#paths) if (p !== '-' && !this.#watchers.has(p)) this.#watchPath(p)
    this.#publish(changed, false)
  }

  /** Folds a new parse of a file into its state, keeping last good objects (see the top of this file). */
  #apply(st: FileState, load: FileLoad): void {
    st.ignoredKinds = load.ignoredKinds
    if (load.parseErrors.length > 0) {
      st.fileErrors = load.parseErrors
      st.entries = st.entries.filter((d) => d.object !== null).map((d) => ({ ...d, errors: [] }))
      return
    }
    const lastGood = new Map<string, KubeObject>()
    for (const d of st.entries) if (d.id !== null && d.object !== null) lastGood.set(d.id, d.object)
    st.fileErrors = []
    st.entries = load.entries.map((d) => {
      if (d.object !== null || d.id === null) return d
      const good = lastGood.get(d.id)
      return good === undefined ? d : { ...d, object: good }
    })
  }

  #errorsOf(st: FileState): ObjectError[] {
    return [...st.fileErrors, ...st.entries.flatMap((d) => d.errors)]
  }

  #publish(changed: string[], initial: boolean): void {
    const loads: FileLoad[] = [...this.#files.values()].map((st) => ({
      file: st.file,
      parseErrors: st.fileErrors,
      entries: st.entries,
      ignoredKinds: st.ignoredKinds,
    }))
    const merged = mergeFiles(loads)
    for (const k of merged.ignoredKinds) {
      if (!this.#ignoredKinds.includes(k)) this.#log.info({ kind: k }, `kind ${k} is not used by meshlet; ignored`)
    }
    this.#ignoredKinds = merged.ignoredKinds
    this.#errors = merged.errors
    this.#objects = merged.objects
    const record: ReloadRecord = {
      time: new Date().toISOString(),
      ok: merged.errors.length === 0,
      objects: merged.objects.length,
      errors: merged.errors.length,
      changed: changed.map((f) => (f === '-' ? STDIN_NAME : f)),
      messages: merged.errors.slice(0, HISTORY).map(formatObjectError),
    }
    this.#history.push(record)
    if (this.#history.length > HISTORY) this.#history.splice(0, this.#history.length - HISTORY)
    this.#log.info(
      {
        objects: record.objects,
        errors: record.errors,
        files: this.#files.size,
        changed: initial ? undefined : record.changed,
      },
      initial ? 'manifests loaded' : 'manifests reloaded',
    )
    this.#onUpdate(merged.objects, merged.errors)
  }

  #watchPath(p: string): void {
    let target = p
    let only: string | null = null
    try {
      const isDir = statSyncSafe(p)
      if (!isDir) {
        target = dirname(p)
        only = basename(p)
      }
      const w = watch(target, { recursive: isDir === true, persistent: false }, (_event, name) => {
        if (only !== null && name !== null && basename(String(name)) !== only) return
        this.#schedule()
      })
      w.on('error', (err) => {
        this.#log.warn({ err, path: p }, 'watch failed; will retry on the next reload')
        w.close()
        this.#watchers.delete(p)
        this.#retryWatch()
      })
      this.#watchers.set(p, w)
    } catch (err) {
      this.#log.warn({ err, path: p }, 'cannot watch path; will retry')
      this.#retryWatch()
    }
  }

  /** A watch that failed (its directory went away) is set up again once the path is back, polling once a second. */
  #retryWatch(): void {
    if (this.#closed || this.#retryTimer) return
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null
      if (this.#closed) return
      let missing = false
      for (const p of this.#paths) {
        if (p === '-' || this.#watchers.has(p)) continue
        if (statSyncSafe(p) === null) missing = true
        else {
          this.#watchPath(p)
          this.#schedule()
        }
      }
      if (missing) this.#retryWatch()
    }, 1000)
    this.#retryTimer.unref()
  }
}

/** true: a directory; false: something else that exists; null: missing or unreadable. */
function statSyncSafe(p: string): boolean | null {
  try {
    return statSync(p).isDirectory()
  } catch {
    return null
  }
}
