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
// Every reload re-reads the files, comparing text, so a burst of events or an event for an unrelated file costs a
// read, not a rebuild. When a reload happens (issue 13 item 10, half-written saves):
//   - a file written in place ("change" events) is read once it has been quiet for debounceMs (each event restarts
//     the wait; at most 10 × debounceMs after the first), so a save written in several chunks is read whole;
//   - a file renamed into place ("rename" events only: an editor's temp file, `kubectl`-style atomic writes, a new
//     file) is complete already and is read at once (RENAME_DELAY_MS, to coalesce the editor's few events);
//   - a file that had objects and is now empty (no documents: a truncate before a rewrite) is not applied until it has
//     stayed empty for emptyConfirmMs; that is logged, and content arriving meanwhile cancels it.
// Events for names that cannot be manifests (dot-files, other extensions: editor swap and temp files) are ignored.
// Files are parsed and validated in a worker thread (config/manifest-parser.ts), the first load too (issue 14: seconds
// of parsing at 10,000 Services would stall /healthz); only small files parse here while the worker starts.

import { readdirSync, statSync, watch, type FSWatcher } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import type { Logger } from 'pino'
import type { KubeObject } from '../model/objects.ts'
import type { ObjectError } from '../model/snapshot.ts'
import { formatObjectError } from '../model/validate.ts'
import { sameData } from '../model/build-snapshot.ts'
import {
  STDIN_NAME,
  expandPaths,
  mergeFiles,
  readBounded,
  readStdin,
  tooLargeError,
  unreadable,
  type DocEntry,
  type FileLoad,
} from './load.ts'
import { ManifestParser } from './manifest-parser.ts'

/** Wait after "rename" events only: an atomic replace is complete; this only coalesces an editor's burst. */
const RENAME_DELAY_MS = 10
/** Names fs.watch reports that can hold a manifest; others (".web.yaml.swp", "web.yaml~", "x.tmp") are ignored. */
const NOT_A_MANIFEST = /(^|\/)\.|\.(?!(ya?ml|json)$)[^./]*$/i

export interface ManifestSourceOptions {
  readonly log: Logger
  /** The whole configuration in force: every object (last good versions included) and every current error. */
  readonly onUpdate: (objects: KubeObject[], errors: ObjectError[]) => void
  /**
   * A file written in place is read once no event has come for this many milliseconds (and at most 10 × this after
   * the first event). Default 100. Files renamed into place are read at once.
   */
  readonly debounceMs?: number
  /** How long a file that had objects must stay empty before its objects go. Default 2000 ms. */
  readonly emptyConfirmMs?: number
  /** Where files are parsed; default: a worker thread of its own, ended by close(). */
  readonly parser?: ManifestParser
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
  /** Since when the file has been empty while its objects are kept until that is confirmed (ISO time), else null. */
  readonly emptySince: string | null
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
  /** When the file was first read empty while it had objects; 0 when it is not pending (see the top of the file). */
  emptySince: number
}

const HISTORY = 20

export class ManifestSource {
  readonly #paths: readonly string[]
  readonly #log: Logger
  readonly #onUpdate: ManifestSourceOptions['onUpdate']
  readonly #debounceMs: number
  readonly #emptyConfirmMs: number
  readonly #parser: ManifestParser
  readonly #ownParser: boolean
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
  /** When the first event of the burst the timer waits for came (0: none), and whether a "change" was among them. */
  #burstStart = 0
  #burstChanged = false
  #confirmTimer: NodeJS.Timeout | null = null
  #retryTimer: NodeJS.Timeout | null = null
  #reloading = false
  #again = false
  #closed = false

  constructor(paths: readonly string[], options: ManifestSourceOptions) {
    this.#paths = paths
    this.#log = options.log
    this.#onUpdate = options.onUpdate
    this.#debounceMs = options.debounceMs ?? 100
    this.#emptyConfirmMs = options.emptyConfirmMs ?? 2000
    this.#ownParser = options.parser === undefined
    this.#parser = options.parser ?? new ManifestParser()
  }

  /** First load: throws ConfigError MLT_CONFIG_UNREADABLE when a path cannot be read. Calls onUpdate once. */
  async start(): Promise<void> {
    this.#parser.warm()
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
      this.#schedule('change')
    }
  }

  async #initialLoad(): Promise<void> {
    const now = Date.now()
    // Every file is read first and handed to the parser's worker at once (its answers come in order), so reading the
    // next file overlaps parsing this one, and the event loop that serves /healthz (and, on a reload of the whole
    // set, DNS and the listeners) never runs a parse: at 10,000 Services the first load is seconds of YAML (issue 14).
    // Files of at most 16 KiB are parsed here while the worker is still loading its modules (manifest-parser.ts).
    const pending: { file: string; text: string; load: Promise<FileLoad> }[] = []
    for (const file of this.#allFiles()) {
      // stdin is read once here and never again; files keep their text for change detection.
      const name = file === '-' ? STDIN_NAME : file
      let read
      try {
        read = file === '-' ? await readStdin() : await readBounded(file)
      } catch (err) {
        throw unreadable(file, err)
      }
      if ('tooLarge' in read) {
        const load = { file: name, parseErrors: [tooLargeError(name, read.tooLarge)], entries: [], ignoredKinds: [] }
        // Never equal to a file's text: a change is noticed.
        pending.push({ file, text: `\0too large: ${read.tooLarge}`, load: Promise.resolve(load) })
      } else pending.push({ file, text: read.text, load: this.#parser.parse(read.text, name) })
    }
    for (const { file, text, load } of pending) {
      const st: FileState = {
        file,
        text,
        entries: [],
        fileErrors: [],
        ignoredKinds: [],
        changedAt: now,
        emptySince: 0,
      }
      this.#apply(st, await load)
      this.#files.set(file, st)
      for (const err of this.#errorsOf(st)) this.#log.warn({ file, code: err.code }, formatObjectError(err))
    }
    this.#publish([...this.#files.keys()], true)
  }

  close(): void {
    this.#closed = true
    if (this.#timer) clearTimeout(this.#timer)
    if (this.#retryTimer) clearTimeout(this.#retryTimer)
    if (this.#confirmTimer) clearTimeout(this.#confirmTimer)
    this.#timer = null
    this.#retryTimer = null
    this.#confirmTimer = null
    if (this.#ownParser) this.#parser.close()
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
        emptySince: st.emptySince === 0 ? null : new Date(st.emptySince).toISOString(),
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

  /**
   * Arms the reload timer for an event: RENAME_DELAY_MS while the burst holds only "rename" events, else debounceMs
   * after the latest event, but no later than 10 × debounceMs after the burst's first (a file rewritten without pause
   * is still read).
   */
  #schedule(event: 'rename' | 'change'): void {
    if (this.#closed) return
    const now = Date.now()
    if (this.#burstStart === 0) this.#burstStart = now
    if (event === 'change') this.#burstChanged = true
    const wait = this.#burstChanged
      ? Math.max(0, Math.min(this.#debounceMs, this.#burstStart + 10 * this.#debounceMs - now))
      : RENAME_DELAY_MS
    if (this.#timer) clearTimeout(this.#timer)
    this.#timer = setTimeout(this.#fire, wait)
  }

  readonly #fire = (): void => {
    this.#timer = null
    this.#burstStart = 0
    this.#burstChanged = false
    this.reload().catch((err: unknown) => this.#log.error({ err }, 'manifest reload failed'))
  }

  /** A reload once the oldest pending empty file has been empty for emptyConfirmMs. */
  #scheduleConfirm(): void {
    if (this.#closed || this.#confirmTimer) return
    let oldest = Infinity
    for (const st of this.#files.values()) if (st.emptySince !== 0) oldest = Math.min(oldest, st.emptySince)
    if (oldest === Infinity) return
    this.#confirmTimer = setTimeout(
      () => {
        this.#confirmTimer = null
        this.reload()
          .catch((err: unknown) => this.#log.error({ err }, 'manifest reload failed'))
          .finally(() => this.#scheduleConfirm())
      },
      Math.max(0, oldest + this.#emptyConfirmMs - Date.now()),
    )
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
      let tooLarge = 0
      let readErr: unknown = null
      try {
        const read = await readBounded(file)
        if ('tooLarge' in read) tooLarge = read.tooLarge
        else text = read.text
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
        emptySince: 0,
      }
      if (text === st.text && st.emptySince !== 0) {
        // The same content is back (truncated, then rewritten): nothing was applied, so nothing changes.
        st.emptySince = 0
        this.#log.info({ file }, 'file has its content again; its objects were kept')
      }
      if (tooLarge > 0) {
        const e = tooLargeError(file, tooLarge)
        st.emptySince = 0
        if (st.fileErrors[0]?.message !== e.message) {
          st.text = null
          st.fileErrors = [e]
          st.entries = st.entries.filter((d) => d.object !== null).map((d) => ({ ...d, errors: [] }))
          st.changedAt = Date.now()
          changed.push(file)
          this.#log.warn({ file, code: e.code }, `${formatObjectError(e)}; keeping its last good objects`)
        }
      } else if (text === null) {
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
        const load = await this.#parser.parse(text, file)
        if (prev && this.#holdEmpty(st, load)) {
          next.set(file, st)
          continue
        }
        st.text = text
        st.changedAt = Date.now()
        this.#apply(st, load)
        changed.push(file)
        for (const err of this.#errorsOf(st)) this.#log.warn({ file, code: err.code }, formatObjectError(err))
      }
      next.set(file, st)
    }
    for (const file of this.#files.keys()) if (!next.has(file)) changed.push(file)
    if (this.#closed || changed.length === 0) return
    this.#files = next
    for (const p of this.#paths) {
      if (p === '-') continue
      if (!this.#watchers.has(p)) this.#watchPath(p)
      else if (statSyncSafe(p) === true) this.#syncSubdirWatches(p)
    }
    this.#publish(changed, false)
  }

  /**
   * true while a file that has objects reads empty and that has not lasted emptyConfirmMs yet: the objects stay (a
   * save that truncates first must not take the file's Services away for the moment it takes to write them back).
   */
  #holdEmpty(st: FileState, load: FileLoad): boolean {
    const empty = load.entries.length === 0 && load.parseErrors.length === 0 && load.ignoredKinds.length === 0
    const objects = st.entries.filter((d) => d.object !== null).length
    if (!empty || objects === 0) {
      if (st.emptySince !== 0) this.#log.info({ file: st.file }, 'file has content again; its objects were kept')
      st.emptySince = 0
      return false
    }
    const now = Date.now()
    if (st.emptySince === 0) {
      st.emptySince = now
      this.#log.warn(
        { file: st.file, objects, confirmSeconds: this.#emptyConfirmMs / 1000 },
        'file is empty: its objects stay until it has been empty for confirmSeconds',
      )
      this.#scheduleConfirm()
      return true
    }
    if (now - st.emptySince < this.#emptyConfirmMs) {
      this.#scheduleConfirm()
      return true
    }
    st.emptySince = 0
    this.#log.warn({ file: st.file, objects }, 'file stayed empty: its objects are removed')
    return false
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
      if (d.id === null) return d
      const good = lastGood.get(d.id)
      if (good === undefined) return d
      if (d.object === null) return { ...d, object: good }
      // An unchanged object keeps the identity it had (issue 14): the Store's build memo interns the previous one,
      // so a fresh equal copy kept here would hold every reloaded file's objects twice for the life of the process.
      return good !== d.object && sameData(good, d.object) ? { ...d, object: good } : d
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
      const w = this.#watchDir(target, only)
      w.on('error', (err) => {
        this.#log.warn({ err, path: p }, 'watch failed; will retry on the next reload')
        w.close()
        this.#watchers.delete(p)
        this.#closeSubdirWatches(p)
        this.#retryWatch()
      })
      this.#watchers.set(p, w)
      if (isDir) this.#syncSubdirWatches(p)
    } catch (err) {
      this.#log.warn({ err, path: p }, 'cannot watch path; will retry')
      this.#retryWatch()
    }
  }

  /**
   * One directory, not recursive: on Linux, Node's recursive watch reports an atomic rename as "change" events and
   * misses in-place writes for a while, and the event type is what tells a rename (read at once) from a write (read
   * once quiet). Subdirectories get watches of their own (#syncSubdirWatches).
   */
  #watchDir(dir: string, only: string | null): FSWatcher {
    return watch(dir, { persistent: false }, (event, name) => {
      if (only !== null && name !== null && String(name) !== only) return
      if (only === null && name !== null && NOT_A_MANIFEST.test(String(name))) return
      this.#schedule(event === 'change' ? 'change' : 'rename')
    })
  }

  /** Watches every subdirectory of the -f directory `p` (dot-entries skipped, as load.ts does), and no others. */
  #syncSubdirWatches(p: string): void {
    const want = new Set(subdirectories(p))
    for (const key of [...this.#watchers.keys()]) {
      const sub = subKey(p, key)
      if (sub !== null && !want.has(sub)) {
        this.#watchers.get(key)!.close()
        this.#watchers.delete(key)
      }
    }
    for (const dir of want) {
      const key = `${p}\0${dir}`
      if (this.#watchers.has(key)) continue
      try {
        const w = this.#watchDir(dir, null)
        // A subdirectory removed under us: the next reload notices (its parent's watch reports it) and re-syncs.
        w.on('error', () => {
          w.close()
          this.#watchers.delete(key)
        })
        this.#watchers.set(key, w)
      } catch {
        // Gone between the listing and the watch: the parent's watch reports the removal.
      }
    }
  }

  #closeSubdirWatches(p: string): void {
    for (const key of [...this.#watchers.keys()]) {
      if (subKey(p, key) === null) continue
      this.#watchers.get(key)!.close()
      this.#watchers.delete(key)
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
          this.#schedule('rename')
        }
      }
      if (missing) this.#retryWatch()
    }, 1000)
    this.#retryTimer.unref()
  }
}

/** The subdirectory a watcher key names when it belongs to the -f directory `p`, else null. */
function subKey(p: string, key: string): string | null {
  return key.startsWith(`${p}\0`) ? key.slice(p.length + 1) : null
}

/** Every directory below `dir`, depth first, dot-entries skipped. A few stat calls per directory, on reload only. */
function subdirectories(dir: string): string[] {
  const out: string[] = []
  let entries
  try {
    entries = readdirSync(dir, { withFileTypes: true })
  } catch {
    return out
  }
  for (const e of entries) {
    if (e.name.startsWith('.') || !e.isDirectory()) continue
    const sub = join(dir, e.name)
    out.push(sub, ...subdirectories(sub))
  }
  return out
}

/** true: a directory; false: something else that exists; null: missing or unreadable. */
function statSyncSafe(p: string): boolean | null {
  try {
    return statSync(p).isDirectory()
  } catch {
    return null
  }
}
