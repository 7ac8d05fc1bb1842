import { writeFileSync, mkdtempSync } from 'node:fs'
import { join } from 'node:path'
import { pino } from 'pino'
import { ManifestSource } from '../config/watch.ts'
import { monitorEventLoopDelay } from 'node:perf_hooks'
const dir = mkdtempSync('/tmp/mf/d-')
writeFileSync(join(dir, 'web.yaml'), 'apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n')
const doc = (i: number) => `---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c${i}\ndata:\n  a: "${'x'.repeat(100)}"\n  b: hello world\n`
let big = ''; for (let i = 0; big.length < 2.9 * 1024 * 1024; i++) big += doc(i)
let done: () => void
const p = new Promise<void>((r) => (done = r))
let n = 0
const src = new ManifestSource([dir], { log: pino({ level: 'warn' }), onUpdate: () => { if (++n === 2) done() } })
await src.start()
const h = monitorEventLoopDelay({ resolution: 1 }); h.enable()
let last = performance.now(), worst = 0
const iv = setInterval(() => { const now = performance.now(); worst = Math.max(worst, now - last); last = now }, 1)
const t0 = performance.now()
writeFileSync(join(dir, 'big.yaml'), big)
await p
console.log('reload after', (performance.now() - t0).toFixed(0), 'ms; worst gap', worst.toFixed(1), 'ms; elu p99', (h.percentile(99) / 1e6).toFixed(1), 'max', (h.max / 1e6).toFixed(1))
clearInterval(iv); src.close()
