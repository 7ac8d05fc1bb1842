// Secret values never appear in errors (issue 13 item 12): errors reach the log, /status and `meshlet check`'s output,
// so an error about a Secret value names its key and the problem, never the value — for every way a value can be
// wrong, and for a JSON file whose syntax error would otherwise quote the text around it.

import t from 'tap'
import { loadManifestText } from '../../config/load.ts'
import { formatObjectError } from '../../model/validate.ts'

const SECRET = 'hunter2-Sup3r-S3cret'

const cases: { name: string; file: string; text: string; path: string; code: string }[] = [
  {
    name: 'data value that is not base64 (Opaque Secret)',
    file: 'opaque.yaml',
    text: `apiVersion: v1\nkind: Secret\nmetadata: { name: db }\ndata:\n  password: "${SECRET}!"\n`,
    path: 'data[password]',
    code: 'MLT_CONFIG_INVALID_BASE64',
  },
  {
    name: 'data value of the wrong type',
    file: 'typed.yaml',
    text: `apiVersion: v1\nkind: Secret\nmetadata: { name: db }\ndata:\n  password: { nested: "${SECRET}" }\n`,
    path: 'data[password]',
    code: 'MLT_CONFIG_TYPE',
  },
  {
    name: 'stringData value of the wrong type',
    file: 'string-data.yaml',
    text: `apiVersion: v1\nkind: Secret\nmetadata: { name: db }\nstringData:\n  token: ["${SECRET}"]\n`,
    path: 'stringData[token]',
    code: 'MLT_CONFIG_TYPE',
  },
  {
    name: 'data that is not a map',
    file: 'not-a-map.yaml',
    text: `apiVersion: v1\nkind: Secret\nmetadata: { name: db }\ndata: "${SECRET}"\n`,
    path: 'data',
    code: 'MLT_CONFIG_TYPE',
  },
  {
    name: 'TLS Secret with a bad tls.key',
    file: 'tls.yaml',
    text: `apiVersion: v1\nkind: Secret\nmetadata: { name: tls }\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: "${SECRET}"\n  tls.key: "${SECRET}"\n`,
    path: 'stringData[tls.crt]',
    code: 'MLT_CONFIG_INVALID_PEM',
  },
  {
    name: 'JSON Secret with a syntax error next to a value',
    file: 'secret.json',
    text: `{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "data": {"password": ${SECRET}}}`,
    path: '',
    code: 'MLT_CONFIG_PARSE',
  },
]

for (const c of cases) {
  t.test(c.name, async (t) => {
    const r = loadManifestText(c.text, c.file)
    const e = r.errors.find((x) => x.code === c.code && x.path === c.path)
    t.ok(e, `an error ${c.code} at ${JSON.stringify(c.path)}`)
    for (const err of r.errors) {
      const line = formatObjectError(err)
      t.notMatch(line, SECRET.slice(0, 8), `no part of the value in: ${line}`)
    }
  })
}
