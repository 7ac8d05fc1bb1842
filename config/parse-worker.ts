// The manifest parser's worker thread (config/manifest-parser.ts): YAML/JSON parsing and validation of one file's
// text at a time, off the main event loop, so DNS, the balancer and the proxy keep answering while a big file loads.
//
// Messages, main → worker: {id, text, file}. Worker → main: {ready: true} once its modules are loaded, then
// {id, load} per request (a FileLoad: plain data, cloned).

import { parentPort } from 'node:worker_threads'
import { parseManifestFile } from './load.ts'

interface Request {
  readonly id: number
  readonly text: string
  readonly file: string
}

const port = parentPort!
port.on('message', (m: Request) => {
  port.postMessage({ id: m.id, load: parseManifestFile(m.text, m.file) })
})
port.postMessage({ ready: true })
