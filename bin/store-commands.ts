// `meshlet apply -f PATH` and `meshlet delete -f PATH` (etcd mode, store/README.md): judged as `meshlet check`, then
// written or deleted in one etcd transaction. Exit codes as check's: 0 done, 1 invalid objects (nothing written) or
// etcd unreachable, 2 usage error.

import { formatObjectError } from '../model/validate.ts'
import { connect } from '../store/client.ts'
import { judge } from '../store/apply.ts'
import { applyWithClaims, deleteWithClaims } from '../store/alloc.ts'
import { parseCidr } from '../model/ip.ts'
import { UP_FLAGS, UsageError, etcdOptions, helpText, parseFlags } from './cli-options.ts'

const STORE_FLAGS = {
  file: { ...UP_FLAGS.file, help: 'manifest file, directory or - (stdin); repeatable' },
  store: { ...UP_FLAGS.store, default: undefined, help: 'etcd://HOST:PORT[,HOST:PORT...] (required)' },
  'etcd-prefix': UP_FLAGS['etcd-prefix'],
  'etcd-cacert': UP_FLAGS['etcd-cacert'],
  'etcd-cert': UP_FLAGS['etcd-cert'],
  'etcd-key': UP_FLAGS['etcd-key'],
  'ingress-class': UP_FLAGS['ingress-class'],
  'service-cidr': {
    ...UP_FLAGS['service-cidr'],
    help: "CIDRs apply allocates ClusterIPs from: the nodes' --service-cidr",
  },
  help: UP_FLAGS.help,
} as const

/** `apply` (write) or `delete` (remove) the objects of the files. */
export async function storeCommand(command: 'apply' | 'delete', argv: readonly string[]): Promise<number> {
  const v = parseFlags(argv, STORE_FLAGS, process.env)
  if (v.help) {
    process.stdout.write(helpText(command, STORE_FLAGS, '-f PATH [-f PATH ...] --store etcd://HOST:PORT'))
    return 0
  }
  const files = (v.file as string[] | undefined) ?? []
  if (files.length === 0) throw new UsageError(`${command}: at least one -f PATH is required`)
  const etcd = etcdOptions(v)
  if (etcd === null) throw new UsageError(`${command}: --store etcd://HOST:PORT[,HOST:PORT...] is required`)
  const serviceCidrs = (v['service-cidr'] as string).split(',').map((text) => {
    const c = parseCidr(text.trim())
    if (!c) throw new UsageError(`--service-cidr: "${text}" is not a CIDR`)
    return c
  })
  const judged = await judge(files, v['ingress-class'] as string, etcd.prefix)
  for (const kind of judged.ignoredKinds) process.stderr.write(`ignored: kind ${kind} is not used by meshlet\n`)
  if (judged.problems.length > 0) {
    for (const p of judged.problems) process.stdout.write((typeof p === 'string' ? p : formatObjectError(p)) + '\n')
    process.stderr.write(`${judged.problems.length} error(s): nothing ${command === 'apply' ? 'written' : 'deleted'}\n`)
    return 1
  }
  const client = connect(etcd)
  try {
    if (command === 'apply') {
      const { revision, clusterIPs } = await applyWithClaims(client, etcd.prefix, judged.writes, serviceCidrs)
      for (const key of judged.writes.keys()) {
        const ips = clusterIPs.get(key)
        process.stdout.write(`stored ${key}${ips ? ` clusterIPs=${ips.join(',')}` : ''}\n`)
      }
      process.stderr.write(`${judged.writes.size} object(s) stored at revision ${revision}\n`)
    } else {
      const keys = [...judged.writes.keys()]
      const { revision, deleted } = await deleteWithClaims(client, etcd.prefix, keys)
      for (const [i, key] of keys.entries()) process.stdout.write(`${deleted[i] ? 'deleted' : 'not found'} ${key}\n`)
      process.stderr.write(`${deleted.filter(Boolean).length} object(s) deleted at revision ${revision}\n`)
    }
    return 0
  } finally {
    client.close()
  }
}
