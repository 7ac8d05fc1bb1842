// Request-target and Host normalisation (specs/ingress.md §1.4) as table tests.

import t from 'tap'
import {
  decodeUnreserved,
  normalizeHost,
  normalizePath,
  parseTarget,
  DEFAULT_PATH_OPTIONS,
  type Target,
} from '../../proxy/http/normalize.ts'

t.test('normalizePath P2..P5', async (t) => {
  const cases: [string, string | null][] = [
    ['/', '/'],
    ['/api/v1/items', '/api/v1/items'],
    ['/app.js', '/app.js'],
    ['/a/b/', '/a/b/'],
    ['//a///b', '/a/b'],
    ['/a//', '/a/'],
    ['/a/./b', '/a/b'],
    ['/a/b/..', '/a/'],
    ['/a/b/.', '/a/b/'],
    ['/a/../b', '/b'],
    ['/../../etc/passwd', '/etc/passwd'],
    ['/static//../api', '/api'],
    ['/%2e%2e/private', '/private'],
    ['/public/%2E%2E/private', '/private'],
    ['/public/%2e./private', '/private'],
    ['/%7Euser', '/~user'],
    ['/%41%42c', '/ABc'],
    ['/a%2fb', '/a%2Fb'],
    ['/a%2Fb/../c', '/c'],
    ['/a%5cb', '/a%5Cb'],
    ['/%3f', '/%3F'],
    ['/%25', '/%25'],
    ['/a\\b', null],
    ['/%zz', null],
    ['/%0', null],
    ['/%', null],
    ['/a%00b', null],
    ['/.', '/'],
    ['/..', '/'],
    ['/a/..%2f..', '/a/..%2F..'],
  ]
  for (const [input, want] of cases) t.equal(normalizePath(input), want, `${input} → ${want}`)
})

t.test('normalizePath options: no slash merging, reject escaped slashes', async (t) => {
  t.equal(normalizePath('//a//b', { mergeSlashes: false, escapedSlashes: 'keep' }), '//a//b')
  t.equal(normalizePath('/a%2Fb', { mergeSlashes: true, escapedSlashes: 'reject' }), null)
  t.equal(normalizePath('/a%5cb', { mergeSlashes: true, escapedSlashes: 'reject' }), null)
  t.equal(normalizePath('/a%41', { mergeSlashes: true, escapedSlashes: 'reject' }), '/aA')
})

t.test('decodeUnreserved (rule paths, P3 only)', async (t) => {
  t.equal(decodeUnreserved('/%7euser'), '/~user')
  t.equal(decodeUnreserved('/a%2fb'), '/a%2Fb')
  t.equal(decodeUnreserved('/plain'), '/plain')
})

t.test('parseTarget P1 and #', async (t) => {
  const out: Target = { authority: null, path: '', query: '' }
  const cases: [string, { authority: string | null; path: string; query: string } | null][] = [
    ['/p?q=1', { authority: null, path: '/p', query: '?q=1' }],
    ['/p?a=/../b', { authority: null, path: '/p', query: '?a=/../b' }],
    ['/a/../b?x', { authority: null, path: '/b', query: '?x' }],
    ['http://Example.com/x/y', { authority: 'Example.com', path: '/x/y', query: '' }],
    ['HTTP://h:8080', { authority: 'h:8080', path: '/', query: '' }],
    ['https://h?q', { authority: 'h', path: '/', query: '?q' }],
    ['*', null],
    ['a', null],
    ['//h/p', { authority: null, path: '/h/p', query: '' }],
    ['/p#frag', null],
    ['/p?q#frag', null],
    ['ftp://h/p', null],
  ]
  for (const [input, want] of cases) {
    const ok = parseTarget(input, DEFAULT_PATH_OPTIONS, out)
    if (want === null) t.notOk(ok, `${input} → 400`)
    else {
      t.ok(ok, input)
      t.same({ authority: out.authority, path: out.path, query: out.query }, want, input)
    }
  }
})

t.test('normalizeHost H3..H5', async (t) => {
  const cases: [string, string | null][] = [
    ['example.com', 'example.com'],
    ['Example.COM', 'example.com'],
    ['example.com:8080', 'example.com'],
    ['example.com.', 'example.com'],
    ['example.com.:80', 'example.com'],
    ['', ''],
    ['[::1]:8080', '[::1]'],
    ['[::1]', '[::1]'],
    ['127.0.0.1:80', '127.0.0.1'],
    ['a_b.example', 'a_b.example'],
    ['a/b', null],
    ['a\\b', null],
    ['user@host', null],
    ['host:', null],
    ['host:123456', null],
    ['host:8x', null],
    ['a b', null],
    ['h?x', null],
    ['h#x', null],
    ['[::1', null],
    ['[::1]x', null],
    ['ex%41mple', 'ex%41mple'],
    ['ex%zz', null],
  ]
  for (const [input, want] of cases) t.equal(normalizeHost(input), want, `${JSON.stringify(input)} → ${want}`)
})
