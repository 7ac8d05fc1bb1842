// The catalogue of configuration error codes, code → { what happened, what to do }: every ObjectError that
// model/validate.ts and config/ produce carries one of these, and names the object and field. Callers (tests, /status
// consumers, `meshlet check` users grepping output) branch on the code, never on the message text.

import { catalogueError, defineCatalogue } from './errors.ts'

export const CONFIG_ERROR_CODES = defineCatalogue({
  /** YAML or JSON syntax: the document cannot be parsed at all (message names the line). */
  MLT_CONFIG_PARSE: {
    message: 'document is not valid YAML/JSON',
    fix: 'fix the syntax at the line the message names (indentation, an unclosed quote or bracket, a tab in YAML); `meshlet check -f FILE` re-checks without starting',
  },
  /** A path given with -f cannot be read (missing, permissions). Thrown, not collected: the CLI exits 1. */
  MLT_CONFIG_UNREADABLE: {
    message: 'path cannot be read',
    fix: 'check that the -f path exists and that the user meshlet runs as can read it (and list it, for a directory)',
  },
  /** A required field is missing or empty (apiVersion, kind, metadata.name, spec.ports[0].port, ...). */
  MLT_CONFIG_REQUIRED: {
    message: 'required field missing',
    fix: 'add the field the message names; kubectl explain KIND.FIELD shows what it expects',
  },
  /** A field has the wrong JSON type (a string where a number is needed, a map where a list is needed). */
  MLT_CONFIG_TYPE: {
    message: 'wrong type',
    fix: 'write the value with the type the message names: quote strings, leave numbers unquoted, use a list (- item) or a map (key: value) where asked',
  },
  /** A number outside its allowed range (ports 1-65535, nodePort 30000-32767, timeouts). */
  MLT_CONFIG_RANGE: {
    message: 'number out of range',
    fix: 'bring the number into the range the message gives (ports 1-65535, nodePort 30000-32767, timeouts ≥ 1)',
  },
  /** A value that is not one of the allowed words (protocol, type, pathType, ...). */
  MLT_CONFIG_ENUM: {
    message: 'value not supported',
    fix: 'use one of the values the message lists (spelling and case matter: TCP, not tcp)',
  },
  /** A name, label key, hostname or DNS name that breaks DNS-1123/DNS-1035/qualified-name/IANA_SVC_NAME rules. */
  MLT_CONFIG_INVALID_NAME: {
    message: 'invalid name',
    fix: "use lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters per label (253 for a DNS name)",
  },
  /** A string with the right type but the wrong form (label values, Ingress paths, header names). */
  MLT_CONFIG_INVALID_VALUE: {
    message: 'invalid value',
    fix: 'rewrite the value in the form the message names (a label value: ≤ 63 of [A-Za-z0-9-_.]; an Ingress path: starting with /; a header name: a token)',
  },
  /** Not an IP address, or an address of a kind the field does not allow (unspecified, link-local, wrong family). */
  MLT_CONFIG_INVALID_IP: {
    message: 'invalid IP address',
    fix: 'write a plain IPv4 or IPv6 address of the kind the field allows (no prefix length, not 0.0.0.0, not link-local, the family the object uses)',
  },
  /** Not a CIDR or an "a-b" address range, or a range whose start is after its end. */
  MLT_CONFIG_INVALID_CIDR: {
    message: 'invalid CIDR or address range',
    fix: 'write ADDRESS/PREFIX (10.0.0.0/24) or START-END with START ≤ END, both of one family',
  },
  /** Addresses of two families where one is needed (a range IPv4-IPv6), or two of one family where two are needed. */
  MLT_CONFIG_FAMILY: {
    message: 'IP family mismatch',
    fix: 'make the addresses agree: one family per range, and one address per family where two (dual stack) are given',
  },
  /** Secret data that is not valid base64. */
  MLT_CONFIG_INVALID_BASE64: {
    message: 'invalid base64',
    fix: "base64-encode the Secret's data values (base64 -w0 FILE), or put the plain text under stringData instead",
  },
  /** A TLS Secret whose tls.crt or tls.key is not PEM. */
  MLT_CONFIG_INVALID_PEM: {
    message: 'invalid PEM',
    fix: 'put PEM text (-----BEGIN CERTIFICATE----- / -----BEGIN PRIVATE KEY-----) base64-encoded in tls.crt and tls.key',
  },
  /** The same value twice inside one object (port names, port+protocol, container names). */
  MLT_CONFIG_DUPLICATE: {
    message: 'duplicate value',
    fix: 'give each entry in the list a distinct value (rename or remove the repeated port name, port/protocol pair or container name)',
  },
  /** The same object (kind, namespace, name) defined twice, in one file or across files. */
  MLT_CONFIG_CONFLICT: {
    message: 'object defined twice',
    fix: 'keep one definition of the object: delete or rename the other copy (both places are in the message)',
  },
  /** A field that is not allowed in this combination (nodePort on a ClusterIP Service, headless NodePort, ...). */
  MLT_CONFIG_FORBIDDEN: {
    message: 'field not allowed here',
    fix: 'remove the field, or change the field that forbids it (set type: NodePort to keep a nodePort, drop clusterIP: None to keep one)',
  },
  /** Exactly one of several fields must be set (probe handler, backend port number/name) and it is not. */
  MLT_CONFIG_ONE_OF: {
    message: 'exactly one of several fields must be set',
    fix: 'set exactly one of the fields the message lists (for a probe one of httpGet, tcpSocket, grpc, exec; for a backend port number or name)',
  },
  /** Two fields disagree (clusterIP vs clusterIPs[0], podIP vs podIPs[0], ipFamilies vs clusterIPs). */
  MLT_CONFIG_MISMATCH: {
    message: 'fields disagree',
    fix: 'make the two fields the message names agree (or drop the singular one and keep the list)',
  },
  /** A named port (probe) that the container does not declare. */
  MLT_CONFIG_UNKNOWN_PORT: {
    message: 'unknown port name',
    fix: "declare the port name under the container's ports (name: NAME), or use the port number in the probe",
  },
  /** A known kind with an apiVersion meshlet does not read (extensions/v1beta1 Ingress, ...). */
  MLT_CONFIG_API_VERSION: {
    message: 'unsupported apiVersion',
    fix: 'use the current apiVersion of the kind (Ingress: networking.k8s.io/v1, EndpointSlice: discovery.k8s.io/v1)',
  },
  /**
   * Input over one of meshlet's size limits (model/validate-common.ts MANIFEST_LIMITS): a file over 3 MiB, nesting
   * deeper than 64 levels, a Service with more than 100 ports, an Ingress with more than 1,000 paths. The message names
   * the limit; the file (or object) is treated like one that does not parse.
   */
  MLT_CONFIG_LIMIT: {
    message: 'over a size limit',
    fix: 'split the file or object below the limit the message names (3 MiB per file, 100 ports per Service, 1,000 paths per Ingress, 64 nesting levels)',
  },
  /** Valid Kubernetes that meshlet cannot honour (Ingress `resource` backends, EndpointSlice ports without a number). */
  MLT_CONFIG_UNSUPPORTED: {
    message: 'not supported by meshlet',
    fix: 'use what meshlet supports instead (a Service backend rather than a resource backend, numbered EndpointSlice ports); the component README lists it',
  },
  /**
   * A field that is not in the Kubernetes API for its kind (`spec.selectr`): a warning in `up`, an error in
   * `meshlet check --strict` (config/strict-fields.ts).
   */
  MLT_CONFIG_UNKNOWN_FIELD: {
    message: 'unknown field',
    fix: "fix the field name's spelling (the message names the path), or delete the field; kubectl explain KIND lists the valid ones",
  },
  /** A key twice in one JSON object (JSON.parse keeps the last): a warning in `up`, an error in `check --strict`. */
  MLT_CONFIG_DUPLICATE_FIELD: {
    message: 'duplicate field',
    fix: 'delete one of the two occurrences of the key (JSON keeps only the last)',
  },
})

export type ConfigErrorCode = keyof typeof CONFIG_ERROR_CODES

/** Thrown (not collected) for failures that stop a load as a whole: an unreadable path. */
export class ConfigError extends catalogueError('ConfigError', CONFIG_ERROR_CODES) {}
