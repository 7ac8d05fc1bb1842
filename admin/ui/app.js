// meshlet's dashboard script: one EventSource on /ui/events, each message the whole view (admin/dashboard.ts), each
// table rebuilt from it. Values only ever reach the page through textContent, so a hostile name or message is text.
'use strict'

function cell(row, text, className) {
  const td = document.createElement('td')
  td.textContent = text === null || text === undefined ? '' : String(text)
  if (className) td.className = className
  row.appendChild(td)
  return td
}

function fill(id, items, render, empty) {
  const body = document.querySelector(`#${id} tbody`)
  const rows = []
  for (const item of items) {
    const tr = document.createElement('tr')
    render(tr, item)
    rows.push(tr)
  }
  if (rows.length === 0) {
    const tr = document.createElement('tr')
    const td = cell(tr, empty, 'muted')
    td.colSpan = 10
    rows.push(tr)
  }
  body.replaceChildren(...rows)
}

const rate = (n) => (n >= 10 ? n.toFixed(0) : n.toFixed(1))
const stateClass = (s) => s.replace(/\s+/g, '-')

function render(view) {
  const state = document.getElementById('state')
  state.textContent = view.ready ? `ready · snapshot ${view.version}` : 'not ready'
  state.className = view.ready ? 'ready' : 'not-ready'
  fill(
    'services',
    view.services,
    (tr, s) => {
      tr.dataset.service = s.key
      cell(tr, s.key)
      cell(tr, s.type)
      cell(tr, [...s.clusterIPs, ...s.loadBalancerIPs].join(', ') + (s.pending ? ` (pending: ${s.pending})` : ''))
      cell(tr, s.ports.join(', '))
      const td = cell(tr, '')
      const ul = document.createElement('ul')
      ul.className = 'endpoints'
      for (const e of s.endpoints) {
        const li = document.createElement('li')
        li.dataset.endpoint = e.address
        li.dataset.state = e.state
        li.className = stateClass(e.state)
        li.textContent = `${e.address} ${e.state}${e.pod ? ` (${e.pod})` : ''}${e.message ? ` — ${e.message}` : ''}`
        ul.appendChild(li)
      }
      if (s.endpoints.length === 0) ul.textContent = 'none'
      td.appendChild(ul)
      cell(tr, rate(s.requestsPerSecond))
      cell(tr, rate(s.connectionsPerSecond))
    },
    'no Services',
  )
  fill(
    'routes',
    view.routes,
    (tr, r) => {
      cell(tr, r.host ?? '*')
      cell(tr, `${r.path} (${r.kind})`)
      cell(tr, r.ingress)
      cell(tr, r.service ?? '')
      cell(tr, r.endpoints)
      cell(tr, r.error ?? '', r.error ? 'error' : '')
    },
    'no Ingress routes',
  )
  fill(
    'pools',
    view.pools,
    (tr, p) => {
      cell(tr, p.pool)
      cell(tr, p.assigned)
      cell(tr, p.capacity)
      cell(tr, p.advertised ? 'yes' : 'no')
    },
    'no pools',
  )
  fill(
    'listeners',
    view.listeners,
    (tr, l) => {
      cell(tr, l.name)
      cell(tr, `${l.address}:${l.port}`)
      cell(tr, l.state, l.error ? 'error' : '')
      cell(tr, l.error ?? '')
    },
    'no listeners',
  )
  fill(
    'errors',
    view.errors,
    (tr, e) => {
      cell(tr, e.file ? `${e.file}${e.doc ? ` doc ${e.doc}` : ''}` : '')
      cell(tr, e.object ?? '')
      cell(tr, e.field)
      cell(tr, e.code)
      cell(tr, e.message, 'error')
    },
    'none',
  )
  document.getElementById('dns').textContent = rate(view.dnsQueriesPerSecond)
}

const events = new EventSource('/ui/events')
events.onmessage = (m) => render(JSON.parse(m.data))
events.onerror = () => {
  const state = document.getElementById('state')
  state.textContent = 'disconnected (retrying)'
  state.className = 'not-ready'
}
