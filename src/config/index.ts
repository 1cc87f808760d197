/**
 * Configuration layer: schema (schema.ts), loading (load.ts), cross-field checks (validate.ts),
 * addresses (address.ts), port sets (ports.ts), the cluster key (secret.ts).
 * Reference: docs/configuration.md; examples: config/example.yaml, config/lab.yaml.
 */
export { loadConfig, parseConfig, selectSelf, clusterWireId, type ParseOptions } from './load';
export { formatConfigErrors, formatIssue } from './issues';
export { IpAddress, parseIpAddress, formatIpv6, ip, type IpFamily } from './address';
export { PortSet, parsePortSpec, type PortRange } from './ports';
export { SecretKey, MIN_KEY_BYTES, type KeySource } from './secret';
export { ConfigFileSchema, FIELDS, type ConfigFile, type ConfigFileInput, type FieldDoc } from './schema';
export type * from './types';
export { configHash, canonicalConfigText, hexOf, type ConfigHash } from './config-hash';
