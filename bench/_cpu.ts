// CPU accounting shared by the benchmarks (bench/dns.ts, bench/proxy.ts; run.ts skips files starting with '_'): a
// process's CPU time with its descendants, and the foreign-CPU check. The machine may be shared: every measurement
// reads /proc/stat too, and the CPU time that is neither the measured processes' nor this process's (with the load
// generator, its reaped child) is foreign; above FOREIGN_LIMIT of the machine's CPUs the measurement is disturbed and
// run again (up to RERUNS times), keeping the least disturbed run. Results still disturbed are marked '*' in tables.

import { readdirSync, readFileSync } from 'node:fs'

/** Clock ticks per second of /proc's CPU times (USER_HZ, 100 on Linux). */
export const CLK_TCK = 100
/** Share of the machine's CPU time used by other processes above which a measurement is disturbed. */
export const FOREIGN_LIMIT = 0.1
/** Times a disturbed measurement is run again before the least disturbed run is kept. */
export const RERUNS = 2

/**
 * utime + stime + cutime + cstime of a process and of its live descendants, in clock ticks: reaped children (dnsmasq's
 * TCP forks, a load generator run to completion) are in cutime/cstime; live ones (nginx's workers, a backend) are
 * walked through /proc/PID/task/TID/children. Threads are in their process's times. 'self': this process and its
 * reaped children only (the load generator it waited for), not the servers it spawned.
 */
export function cpuTicks(pid: number | 'self'): number {
  let total = 0
  const visit = (p: number | 'self', depth: number) => {
    let stat: string
    try {
      stat = readFileSync(`/proc/${p}/stat`, 'utf8')
    } catch {
      return // gone
    }
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    total += Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])
    // 'self' stops here: the live processes it spawned are servers, measured (or foreign) on their own.
    if (p === 'self' || depth > 8) return
    try {
      // A child is listed under the thread that forked it.
      for (const task of readdirSync(`/proc/${p}/task`)) {
        const children = readFileSync(`/proc/${p}/task/${task}/children`, 'utf8').trim()
        for (const c of children.split(/\s+/).filter(Boolean)) visit(Number(c), depth + 1)
      }
    } catch {
      // no children file (kernel without CONFIG_PROC_CHILDREN) or gone
    }
  }
  visit(pid, 0)
  return total
}

/** Busy ticks (everything but idle and iowait) of every CPU, and how many CPUs, from /proc/stat. */
function busyTicks(): { busy: number; cpus: number } {
  let busy = 0
  let cpus = 0
  for (const line of readFileSync('/proc/stat', 'utf8').split('\n')) {
    const m = /^cpu(\d+) (.*)$/.exec(line)
    if (!m) continue
    cpus++
    const f = m[2]!.trim().split(/\s+/).map(Number)
    // user nice system idle iowait irq softirq steal: steal is time another guest had.
    busy += f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + (f[7] ?? 0)
  }
  return { busy, cpus }
}

export interface CpuWindow {
  /** CPU ticks each process of `own` used since the window opened, in the order given. */
  readonly ticks: number[]
  /** Share of the machine's CPU time (0-1) other processes used meanwhile. */
  readonly foreign: number
  readonly seconds: number
}

/**
 * Opens a measurement window; the function returned closes it. `own`: the processes whose CPU belongs to the
 * measurement (the server, its backend, 'self' for this process and the load generator it waits for). A process
 * listed twice, or a descendant of another listed one, would be counted twice: list each tree once.
 */
export function cpuWindow(own: readonly (number | 'self')[]): () => CpuWindow {
  const before = own.map((p) => cpuTicks(p))
  const b0 = busyTicks()
  const t0 = performance.now()
  return () => {
    const ticks = own.map((p, i) => cpuTicks(p) - before[i]!)
    const b1 = busyTicks()
    const seconds = (performance.now() - t0) / 1000
    const foreignTicks = b1.busy - b0.busy - ticks.reduce((a, t) => a + t, 0)
    const foreign = Math.max(0, foreignTicks / CLK_TCK / (b1.cpus * seconds))
    return { ticks, foreign, seconds }
  }
}

/**
 * Runs `measure`, and again while the result is disturbed (foreign > FOREIGN_LIMIT), up to RERUNS times and while
 * `mayRerun()` (a time budget) allows; keeps the least disturbed run.
 */
export async function leastDisturbed<T extends { foreign: number }>(
  measure: () => Promise<T>,
  mayRerun: () => boolean = () => true,
): Promise<T & { runs: number }> {
  let best = await measure()
  let runs = 1
  for (let i = 0; i < RERUNS && best.foreign > FOREIGN_LIMIT && mayRerun(); i++) {
    const r = await measure()
    runs++
    if (r.foreign < best.foreign) best = r
  }
  return { ...best, runs }
}

/** '*' for a result still disturbed after its reruns, else ''. */
export const disturbedMark = (foreign: number): string => (foreign > FOREIGN_LIMIT ? '*' : '')
