// exec, tcpSocket and grpc handlers against real processes and servers, and through the plane (specs/l4-health.md
// §6.2): exit codes, a hang killed with its process group at the timeout, spawn errors, --exec-prefix placeholders,
// open and closed ports, and a hand-written grpc.health.v1 server on node:http2.

import t from 'tap'
import { createServer as createHttp2Server, type Http2Server, type ServerHttp2Stream } from 'node:http2'
import { createServer as createTcpServer } from 'node:net'
import type { AddressInfo } from 'node:net'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runCommand, expandCommand } from '../../health/handlers/exec.ts'
import { probeTcp } from '../../health/handlers/tcp.ts'
import { healthCheckRequest, parseServingStatus, probeGrpc } from '../../health/handlers/grpc.ts'
import { container, pod, probe, service, startPlane, waitFor } from './helpers.ts'

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

t.test('exec: exit 0 succeeds, other exits and signals fail, a missing command fails', async (t) => {
  t.equal((await runCommand(['true'], 1000)).ok, true)
  const fail = await runCommand(['sh', '-c', 'echo not ready; exit 3'], 1000)
  t.equal(fail.ok, false)
  t.match(fail.message, /exited with 3: not ready/)
  const sig = await runCommand(['sh', '-c', 'kill -9 $$'], 1000)
  t.equal(sig.ok, false)
  t.match(sig.message, /killed by SIGKILL/)
  const missing = await runCommand(['/nonexistent/meshlet-probe'], 1000)
  t.equal(missing.ok, false)
  t.equal(missing.code, 'MLT_HEALTH_SPAWN')
  t.match(missing.message, /ENOENT/)
})

t.test('exec: a hang is killed with its whole process group at the timeout', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'meshlet-health-exec-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const pids = join(dir, 'pids')
  const t0 = Date.now()
  // The shell starts a grandchild (sleep) and waits: both must die.
  const r = await runCommand(['sh', '-c', `sleep 30 & echo $$ $! > ${pids}; wait`], 500)
  const took = Date.now() - t0
  t.equal(r.ok, false)
  t.equal(r.code, 'MLT_HEALTH_TIMEOUT')
  t.ok(took >= 450 && took < 2000, `gave up at the timeout (${took} ms)`)
  const [shell, sleeper] = readFileSync(pids, 'utf8').trim().split(' ').map(Number)
  await waitFor(() => !alive(shell!) && !alive(sleeper!), 2000, 'shell and its child killed')
  t.pass('process group killed')
})

t.test('exec prefix: words and quotes split, placeholders filled, no shell', async (t) => {
  t.same(expandCommand(`docker exec {pod}`, { pod: 'web-1', namespace: 'ns', ip: '10.0.0.1', container: 'app' }), [
    'docker',
    'exec',
    'web-1',
  ])
  t.same(
    expandCommand(`run --name "{namespace} {container}" '$HOME' a\\ b`, {
      pod: 'p',
      namespace: 'ns',
      ip: 'i',
      container: 'c',
    }),
    ['run', '--name', 'ns c', '$HOME', 'a b'],
  )
})

t.test('exec through the plane: the exit code decides readiness; --exec-prefix wraps the command', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'meshlet-health-exec-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const flag = join(dir, 'healthy')
  const h = await startPlane(
    t,
    [
      service('web', 80),
      pod('web-1', '127.0.0.1', [
        container('app', {
          readiness: probe(
            {
              type: 'exec',
              command: [
                'sh',
                '-c',
                `test "$PROBE_POD/$PROBE_IP/$PROBE_CONTAINER" = web-1/127.0.0.1/app && cat ${flag}`,
              ],
            },
            { failureThreshold: 1 },
          ),
        }),
      ]),
      pod('hang', '127.0.0.2', [
        container('app', { readiness: probe({ type: 'exec', command: ['sleep', '10'] }, { timeoutSeconds: 1 }) }),
      ]),
    ],
    { execPrefix: 'env PROBE_POD={pod} PROBE_IP={ip} PROBE_CONTAINER={container}' },
  )
  await waitFor(() => h.probeStatus('web-1', 'readiness')?.lastResult === 'failure', 2000, 'first exec probe ran')
  t.equal(h.podReady('web-1'), false, 'flag file missing: exit 1, not ready')
  t.match(h.probeStatus('web-1', 'readiness')?.lastMessage, /exited with 1/)
  const { writeFileSync } = await import('node:fs')
  writeFileSync(flag, 'ok')
  await waitFor(() => h.podReady('web-1') === true, 2000, 'ready once the command exits 0')
  await waitFor(() => h.probeStatus('hang', 'readiness')?.lastResult === 'failure', 3000, 'hung exec timed out')
  t.match(h.probeStatus('hang', 'readiness')?.lastMessage, /timed out after 1s/)
})

t.test('tcpSocket: open port succeeds, closed port fails, through the plane too', async (t) => {
  const server = createTcpServer((s) => s.destroy())
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const port = (server.address() as AddressInfo).port
  t.teardown(() => new Promise<void>((r) => server.close(() => r())))
  t.equal((await probeTcp('127.0.0.1', port, 1000)).ok, true)
  const h = await startPlane(t, [
    service('web', port),
    pod('web-1', '127.0.0.1', [
      container('app', { readiness: probe({ type: 'tcpSocket', host: null, port }, { failureThreshold: 1 }) }),
    ]),
  ])
  await waitFor(() => h.endpointReady('web', '127.0.0.1') === true, 2000, 'ready on an open port')
  await new Promise<void>((r) => server.close(() => r()))
  await waitFor(() => h.endpointReady('web', '127.0.0.1') === false, 2000, 'out when the port closes')
  t.match(h.probeStatus('web-1', 'readiness')?.lastMessage, /connection refused/)
  const closed = await probeTcp('127.0.0.1', port, 1000)
  t.equal(closed.ok, false)
  t.equal(closed.code, 'MLT_HEALTH_CONNECT')
})

/** A tiny grpc.health.v1 server: status per service name, or a whole-server mode. */
async function grpcHealthServer(t: { teardown(fn: () => unknown): void }) {
  const state = {
    statuses: new Map<string, number>([['', 1]]),
    mode: 'normal' as 'normal' | 'unimplemented' | 'hang',
    services: [] as string[],
    agents: [] as string[],
  }
  const server: Http2Server = createHttp2Server()
  const streams: ServerHttp2Stream[] = []
  server.on('stream', (stream, headers) => {
    streams.push(stream)
    state.agents.push(String(headers['user-agent']))
    const chunks: Buffer[] = []
    stream.on('data', (c: Buffer) => chunks.push(c))
    stream.on('end', () => {
      if (state.mode === 'hang') return
      if (state.mode === 'unimplemented' || headers[':path'] !== '/grpc.health.v1.Health/Check') {
        stream.respond(
          {
            ':status': 200,
            'content-type': 'application/grpc',
            'grpc-status': '12',
            'grpc-message': 'unknown service',
          },
          { endStream: true },
        )
        return
      }
      const body = Buffer.concat(chunks)
      const msg = body.subarray(5)
      // HealthCheckRequest { string service = 1 }: tag 0x0a, length, bytes.
      const name = msg.length > 2 && msg[0] === 0x0a ? msg.subarray(2, 2 + msg[1]!).toString() : ''
      state.services.push(name)
      const status = state.statuses.get(name)
      if (status === undefined) {
        stream.respond(
          { ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '5', 'grpc-message': 'unknown service' },
          { endStream: true },
        )
        return
      }
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true })
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }))
      const reply = status === 0 ? Buffer.alloc(0) : Buffer.from([0x08, status])
      const frame = Buffer.alloc(5)
      frame.writeUInt32BE(reply.length, 1)
      stream.end(Buffer.concat([frame, reply]))
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(() => {
    for (const s of streams) s.destroy()
    return new Promise<void>((r) => server.close(() => r()))
  })
  return { state, server, port: (server.address() as AddressInfo).port }
}

t.test('grpc: SERVING succeeds; NOT_SERVING, unknown service, Unimplemented, refused and hangs fail', async (t) => {
  const g = await grpcHealthServer(t)
  g.state.statuses.set('db', 2)
  const req = (s: string) => healthCheckRequest(s)
  t.equal(parseServingStatus(Buffer.from([0x08, 0x01])), 1)
  t.equal(parseServingStatus(Buffer.alloc(0)), 0, 'absent field is UNKNOWN')
  const ok = await probeGrpc('127.0.0.1', g.port, req(''), 1000)
  t.equal(ok.ok, true, ok.message)
  t.equal(g.state.agents[0], 'kube-probe/1.34')
  const notServing = await probeGrpc('127.0.0.1', g.port, req('db'), 1000)
  t.equal(notServing.ok, false)
  t.equal(notServing.message, 'service unhealthy (responded with "NOT_SERVING")')
  t.same(g.state.services.slice(-1), ['db'], 'service name sent')
  const unknown = await probeGrpc('127.0.0.1', g.port, req('nope'), 1000)
  t.equal(unknown.ok, false)
  t.match(unknown.message, /grpc-status 5/)
  g.state.mode = 'unimplemented'
  const unimpl = await probeGrpc('127.0.0.1', g.port, req(''), 1000)
  t.equal(unimpl.ok, false)
  t.match(unimpl.message, /does not implement the grpc health protocol/)
  g.state.mode = 'hang'
  const hang = await probeGrpc('127.0.0.1', g.port, req(''), 300)
  t.equal(hang.ok, false)
  t.equal(hang.code, 'MLT_HEALTH_TIMEOUT')
  g.state.mode = 'normal'

  const h = await startPlane(t, [
    service('web', g.port),
    pod('web-1', '127.0.0.1', [
      container('app', { readiness: probe({ type: 'grpc', port: g.port, service: 'web' }, { failureThreshold: 1 }) }),
    ]),
  ])
  await waitFor(() => h.probeStatus('web-1', 'readiness')?.lastResult === 'failure', 2000, 'first gRPC probe ran')
  t.equal(h.podReady('web-1'), false, 'service "web" unknown: not ready')
  g.state.statuses.set('web', 1)
  await waitFor(() => h.endpointReady('web', '127.0.0.1') === true, 2000, 'ready when SERVING')
  g.state.statuses.set('web', 2)
  await waitFor(() => h.endpointReady('web', '127.0.0.1') === false, 2000, 'out when NOT_SERVING')

  const port = g.port
  await new Promise<void>((r) => g.server.close(() => r()))
  const refused = await probeGrpc('127.0.0.1', port, req(''), 1000)
  t.equal(refused.ok, false)
  t.equal(refused.code, 'MLT_HEALTH_CONNECT')
})
