// The catalogue of configuration error codes: every ObjectError that model/validate.ts and config/ produce carries one
// of these. Callers (tests, /status consumers, `meshlet check` users grepping output) branch on the code, never on the
// message text.

import { MeshletError } from './errors.ts'

export const CONFIG_ERROR_CODES = {
  /** YAML or JSON syntax: the document cannot be parsed at all (message names the line). */
  MLT_CONFIG_PARSE: 'document is not valid YAML/JSON',
  /** A path given with -f cannot be read (missing, permissions). Thrown, not collected: the CLI exits 1. */
  MLT_CONFIG_UNREADABLE: 'path cannot be read',
  /** A required field is missing or empty (apiVersion, kind, metadata.name, spec.ports[0].port, ...). */
  MLT_CONFIG_REQUIRED: 'required field missing',
  /** A field has the wrong JSON type (a string where a number is needed, a map where a list is needed). */
  MLT_CONFIG_TYPE: 'wrong type',
  /** A number outside its allowed range (ports 1-65535, nodePort 30000-32767, timeouts). */
  MLT_CONFIG_RANGE: 'number out of range',
  /** A value that is not one of the allowed words (protocol, type, pathType, ...). */
  MLT_CONFIG_ENUM: 'value not supported',
  /** A name, label key, hostname or DNS name that breaks DNS-1123/DNS-1035/qualified-name/IANA_SVC_NAME rules. */
  MLT_CONFIG_INVALID_NAME: 'invalid name',
  /** A string with the right type but the wrong form (label values, Ingress paths, header names). */
  MLT_CONFIG_INVALID_VALUE: 'invalid value',
  /** Not an IP address, or an address of a kind the field does not allow (unspecified, link-local, wrong family). */
  MLT_CONFIG_INVALID_IP: 'invalid IP address',
  /** Not a CIDR or an "a-b" address range, or a range whose start is after its end. */
  MLT_CONFIG_INVALID_CIDR: 'invalid CIDR or address range',
  /** Addresses of two families where one is needed (a range IPv4-IPv6), or two of one family where two are needed. */
  MLT_CONFIG_FAMILY: 'IP family mismatch',
  /** Secret data that is not valid base64. */
  MLT_CONFIG_INVALID_BASE64: 'invalid base64',
  /** A TLS Secret whose tls.crt or tls.key is not PEM. */
  MLT_CONFIG_INVALID_PEM: 'invalid PEM',
  /** The same value twice inside one object (port names, port+protocol, container names). */
  MLT_CONFIG_DUPLICATE: 'duplicate value',
  /** The same object (kind, namespace, name) defined twice, in one file or across files. */
  MLT_CONFIG_CONFLICT: 'object defined twice',
  /** A field that is not allowed in this combination (nodePort on a ClusterIP Service, headless NodePort, ...). */
  MLT_CONFIG_FORBIDDEN: 'field not allowed here',
  /** Exactly one of several fields must be set (probe handler, backend port number/name) and it is not. */
  MLT_CONFIG_ONE_OF: 'exactly one of several fields must be set',
  /** Two fields disagree (clusterIP vs clusterIPs[0], podIP vs podIPs[0], ipFamilies vs clusterIPs). */
  MLT_CONFIG_MISMATCH: 'fields disagree',
  /** A named port (probe) that the container does not declare. */
  MLT_CONFIG_UNKNOWN_PORT: 'unknown port name',
  /** A known kind with an apiVersion meshlet does not read (extensions/v1beta1 Ingress, ...). */
  MLT_CONFIG_API_VERSION: 'unsupported apiVersion',
  /**
   * Input over one of meshlet's size limits (model/validate-common.ts MANIFEST_LIMITS): a file over 3 MiB, nesting
   * deeper than 64 levels, a Service with more than 100 ports, an Ingress with more than 1,000 paths. The message names
   * the limit; the file (or object) is treated like one that does not parse.
   */
  MLT_CONFIG_LIMIT: 'over a size limit',
  /** Valid Kubernetes that meshlet cannot honour (Ingress `resource` backends, EndpointSlice ports without a number). */
  MLT_CONFIG_UNSUPPORTED: 'not supported by meshlet',
  /**
   * A field that is not in the Kubernetes API for its kind (`spec.selectr`): a warning in `up`, an error in
   * `meshlet check --strict` (config/strict-fields.ts).
   */
  MLT_CONFIG_UNKNOWN_FIELD: 'unknown field',
  /** A key twice in one JSON object (JSON.parse keeps the last): a warning in `up`, an error in `check --strict`. */
  MLT_CONFIG_DUPLICATE_FIELD: 'duplicate field',
} as const

export type ConfigErrorCode = keyof typeof CONFIG_ERROR_CODES

/** Thrown (not collected) for failures that stop a load as a whole: an unreadable path. */
export class ConfigError extends MeshletError {
  declare readonly code: ConfigErrorCode
  constructor(code: ConfigErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options)
    this.name = 'ConfigError'
  }
}
