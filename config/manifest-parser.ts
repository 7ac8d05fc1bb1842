// Runs config/load.ts's parseManifestFile in one worker thread, so parsing and validating a big manifest (a 3 MiB YAML
// file takes seconds) never stalls the event loop that DNS, the balancer and the proxy share (issue 13 item 11).
//
// One worker, requests answered in order. It starts with warm() (config/watch.ts calls it at start, so the first reload
// does not wait for it: loading the parser's modules takes 0.1-1.5 s depending on the machine's load) or on the first
// request. After a big file (over BIG_TEXT) it ends once idle for IDLE_MS, so the memory that parse took goes back to
// the system with the worker's heap; after small ones it stays, and an edit never waits for a cold start. Its heap is
// capped; a worker that dies (out of memory, a bug) fails the requests it held with an error that becomes the file's
// error (last good objects kept), and the next request starts a fresh worker. Until the worker has loaded its modules,
// a small file (up to SMALL_TEXT, a few milliseconds of parsing) is parsed on the calling thread instead of waiting.

import { Worker } from 'node:worker_threads'
import { parseManifestFile, type FileLoad } from './load.ts'

/** A worker that parsed a big file and then had no request for this long is ended. */
const IDLE_MS = 30_000
/** Text length from which a parse counts as big (its garbage is worth a worker restart). */
const BIG_TEXT = 256 * 1024
/** Text length up to which a parse runs on the calling thread while the worker is still starting. */
const SMALL_TEXT = 16 * 1024
/** Heap cap of the worker: a 3 MiB file needs well under half of it. */
const MAX_HEAP_MB = 512

interface Pending {
  readonly file: string
  readonly resolve: (l: FileLoad) => void
}

export class ManifestParser {
  #worker: Worker | null = null
  readonly #pending = new Map<number, Pending>()
  #nextId = 1
  #idle: NodeJS.Timeout | null = null
  /** The running worker parsed a big file: end it once idle. */
  #sawBig = false
  /** The running worker has loaded its modules. */
  #ready = false
  #closed = false

  /** Starts the worker now, so that the first parse does not wait for its modules to load. */
  warm(): void {
    if (!this.#closed && this.#worker === null) this.#spawn()
  }

  /** Parses and validates `text` (from `file`) in the worker. Never rejects: failures come back as file errors. */
  parse(text: string, file: string): Promise<FileLoad> {
    if (this.#closed) return Promise.resolve(failed(file, 'the manifest parser is closed'))
    const worker = this.#worker ?? this.#spawn()
    if (!this.#ready && text.length <= SMALL_TEXT) return Promise.resolve(parseManifestFile(text, file))
    if (this.#idle !== null) clearTimeout(this.#idle)
    this.#idle = null
    if (text.length > BIG_TEXT) this.#sawBig = true
    const id = this.#nextId++
    return new Promise((resolve) => {
      this.#pending.set(id, { file, resolve })
      worker.postMessage({ id, text, file })
    })
  }

  close(): void {
    this.#closed = true
    if (this.#idle !== null) clearTimeout(this.#idle)
    this.#idle = null
    this.#fail('the manifest parser is closed')
    const w = this.#worker
    this.#worker = null
    // terminate() resolves once the thread is gone; nothing waits for it (the caller is shutting down).
    if (w !== null) void w.terminate()
  }

  #spawn(): Worker {
    const worker = new Worker(new URL('./parse-worker.ts', import.meta.url), {
      name: 'manifest-parser',
      resourceLimits: { maxOldGenerationSizeMb: MAX_HEAP_MB },
    })
    // The worker must not keep the process alive: `meshlet check` and tests end when their work is done.
    worker.unref()
    worker.on('message', (m: { id: number; load: FileLoad } | { ready: true }) => {
      if ('ready' in m) {
        if (this.#worker === worker) this.#ready = true
        return
      }
      const p = this.#pending.get(m.id)
      if (p === undefined) return
      this.#pending.delete(m.id)
      p.resolve(m.load)
      if (this.#pending.size === 0 && this.#worker === worker && this.#sawBig) this.#armIdle(worker)
    })
    worker.on('error', (err: Error & { code?: string }) => {
      if (this.#worker === worker) this.#worker = null
      if (err.code === 'ERR_WORKER_OUT_OF_MEMORY')
        this.#fail(`parsing used more than ${MAX_HEAP_MB} MiB of memory and was stopped`, 'MLT_CONFIG_LIMIT')
      else this.#fail(`the manifest parser failed: ${err.message}`)
    })
    worker.on('exit', () => {
      if (this.#worker === worker) this.#worker = null
      this.#fail('the manifest parser stopped')
    })
    this.#worker = worker
    this.#sawBig = false
    this.#ready = false
    return worker
  }

  #armIdle(worker: Worker): void {
    this.#idle = setTimeout(() => {
      this.#idle = null
      if (this.#worker !== worker || this.#pending.size > 0) return
      this.#worker = null
      void worker.terminate()
    }, IDLE_MS)
    this.#idle.unref()
  }

  #fail(message: string, code: 'MLT_CONFIG_PARSE' | 'MLT_CONFIG_LIMIT' = 'MLT_CONFIG_PARSE'): void {
    for (const p of this.#pending.values()) p.resolve(failed(p.file, message, code))
    this.#pending.clear()
  }
}

function failed(
  file: string,
  message: string,
  code: 'MLT_CONFIG_PARSE' | 'MLT_CONFIG_LIMIT' = 'MLT_CONFIG_PARSE',
): FileLoad {
  return {
    file,
    parseErrors: [{ source: { file, doc: 0 }, object: null, path: '', code, message }],
    entries: [],
    ignoredKinds: [],
  }
}
