/**
 * The forwarding table: everything the data plane needs to decide where a NEW flow goes,
 * as one versioned, validated, immutable artefact (GitHub GLB Director's model: built whole
 * by the control plane, checked, then swapped whole into the forwarder between batches;
 * never edited in place, so a batch never sees half a change).
 *
 * It holds, per VIP, packed copies of the fields the hot path reads (addresses as 16-byte
 * arrays, protocol and port bitmaps, backend addresses/ports) and the weighted-rendezvous
 * backend table; and the cluster's balancer ranking. Established flows do not consult it:
 * their record in the flow table is the truth (docs/flow-records.md "The record is the truth").
 *
 * `generation` increases with every build and is carried in flow records, so a receiver can
 * tell whether a backend index was chosen from the same backend list it holds
 * (src/cluster/generation-history.ts). Encapsulated packets carry it too, unchecked
 * (docs/flow-records.md "Generations").
 */
import type { Config, VipConfig } from '../config';
import { backendTableSteps, type BackendTable } from './backend-table';
import { affinityHash, affinityMask } from './affinity';
import { balancerRankingSteps, type BalancerRanking } from './balancer-ranking';
import { finish, type BuildSteps } from './build-steps';
import { TunlbError, ErrorCodes } from '../errors';

/** Port value meaning "keep the packet's port" (src/packet/nat.ts KEEP_PORT). */
export const KEEP_PORT = -1;
export const METHOD_NAT = 0;
export const METHOD_DSR = 1;

/** backendUp bits (ForwardingTable.backendUp). */
export const BACKEND_UP = 1;
export const BACKEND_ELIGIBLE = 2;

/** Per-backend eligibility for new flows, decided by the control plane (health, drain). */
export type BackendEligibility = (vip: VipConfig, backendIndex: number) => boolean;
/** Per-backend "up" for existing flows (false: unhealthy or removed; draining is up). */
export type BackendUp = (vip: VipConfig, backendIndex: number) => boolean;
/**
 * Per-backend weight for new flows: the file's (the default), or the runtime override
 * (`tunlb weight`, src/backends/runtime-override.ts). An integer 0..65535; 0 = no new flows.
 */
export type BackendWeight = (vip: VipConfig, backendIndex: number) => number;

/** The file's weight (BackendWeight's default). */
export const fileWeight: BackendWeight = (vip, i) => vip.backends[i]!.weight;

export interface ForwardingTable {
  readonly generation: number;
  readonly vipCount: number;
  /** vipCount × 16 bytes: VIP addresses (IPv4-mapped for IPv4). */
  readonly vipAddr: Uint8Array;
  /** 4 or 6 per VIP. */
  readonly vipFamily: Uint8Array;
  /** METHOD_NAT or METHOD_DSR per VIP. */
  readonly vipMethod: Uint8Array;
  /** vipCount × 256: 1 when the VIP serves that IP protocol number. */
  readonly vipProto: Uint8Array;
  /** Per VIP: 8192-byte port bitmap (bit p set when port p is served). */
  readonly vipPorts: readonly Uint8Array[];
  /**
   * Per VIP: its one port when the VIP serves exactly one, else KEEP_PORT. A flow created by
   * fragments is keyed without ports, so this is the VIP port a port-rewriting backend's
   * reply gets back (docs/fragments.md); with several ports it is unknown.
   */
  readonly vipSolePort: Int32Array;
  /**
   * Per VIP: the next VIP (higher index) on the same address, or -1. Several VIPs may share an
   * address when their protocols or ports are disjoint (src/config/validate.ts); findVip
   * returns the first, serviceVip picks the one serving the packet.
   */
  readonly vipNextSame: Int32Array;
  /**
   * Per VIP: 1 with source affinity (`affinity: source[/prefix]`: the backend row comes from
   * the client address, src/decision/affinity.ts), else 0.
   */
  readonly vipAffinity: Uint8Array;
  /** vipCount × 16 bytes: each affinity VIP's client-address mask (flow key address form); zeros otherwise. */
  readonly vipAffinityMask: Uint8Array;
  /** Per VIP: the weighted rendezvous table (row = flowHash >>> 16, or the affinity hash's: pickBackend). */
  readonly backendTables: readonly BackendTable[];
  /** Per VIP: backendCount × 16 bytes of backend addresses. */
  readonly backendAddr: readonly Uint8Array[];
  /** Per VIP: destination port per backend, or KEEP_PORT. */
  readonly backendPort: readonly Int32Array[];
  /**
   * Per VIP, per backend: 0 when it is down (unhealthy, drained past its drain timeout, a
   * reload's tombstone of a removed backend), else BACKEND_UP, plus BACKEND_ELIGIBLE when it
   * takes new flows (healthy, not draining, not in maintenance, weight > 0). Existing flows on a down backend get
   * the forwarder's backend-down treatment (TCP reset, UDP/ICMP moved); a new TCP connection
   * (SYN) on a lingering record of a backend that is not eligible is moved to the table's
   * pick (src/dataplane/forwarder.ts "Connection reuse").
   */
  readonly backendUp: readonly Uint8Array[];
  readonly ranking: BalancerRanking;
  /** The config it was built from (for the control plane; never read per packet). */
  readonly config: Config;
}

export function backendId(vip: VipConfig, i: number): string {
  const b = vip.backends[i]!;
  return b.port === null ? b.address.text : `${b.address.text}#${b.port}`;
}

/**
 * Builds a forwarding table from a validated config. `previous` (same cluster key) lets the
 * backend tables rebuild incrementally: only rows whose winner changed are recomputed (a VIP's
 * table from the previous one's VIP of the same name).
 * `eligible` decides new flows; `up` fills backendUp (existing flows); `weight` gives each
 * backend's weight (the file's by default, or the runtime overrides: a table is a function of
 * these inputs alone, so balancers with the same overrides build the same table).
 * Throws TunlbError(TABLE_BUILD) if the result fails validation (never expected for a
 * validated config; the running table stays in place).
 */
export function buildForwardingTable(
  config: Config,
  hashKey: Uint32Array,
  generation: number,
  eligible: BackendEligibility = () => true,
  previous?: ForwardingTable,
  up: BackendUp = () => true,
  weight: BackendWeight = fileWeight,
): ForwardingTable {
  return finish(forwardingTableSteps(config, hashKey, generation, eligible, previous, up, weight));
}

/**
 * buildForwardingTable as a resumable build (src/decision/build-steps.ts), for the control
 * plane to run in time slices while the running table keeps serving. `eligible` and `up` are
 * called for each VIP's backends when its turn comes (a view that changes meanwhile shows in
 * the next build); `config` must not change until it returns (configs and tables never do).
 */
export function* forwardingTableSteps(
  config: Config,
  hashKey: Uint32Array,
  generation: number,
  eligible: BackendEligibility = () => true,
  previous?: ForwardingTable,
  up: BackendUp = () => true,
  weight: BackendWeight = fileWeight,
): BuildSteps<ForwardingTable> {
  const vips = config.vips;
  const n = vips.length;
  const vipAddr = new Uint8Array(n * 16);
  const vipFamily = new Uint8Array(n);
  const vipMethod = new Uint8Array(n);
  const vipProto = new Uint8Array(n * 256);
  const vipPorts: Uint8Array[] = [];
  const vipSolePort = new Int32Array(n);
  const vipNextSame = new Int32Array(n).fill(-1);
  const vipAffinity = new Uint8Array(n);
  const vipAffinityMask = new Uint8Array(n * 16);
  const backendTables: BackendTable[] = [];
  const backendAddr: Uint8Array[] = [];
  const backendPort: Int32Array[] = [];
  const backendUp: Uint8Array[] = [];
  for (let v = 0; v < n; v++) {
    const vip = vips[v]!;
    vipAddr.set(vip.address.bytes, v * 16);
    vipFamily[v] = vip.address.family;
    vipMethod[v] = vip.method === 'dsr' ? METHOD_DSR : METHOD_NAT;
    vipProto.set(vip.protocolAllowed, v * 256);
    vipPorts.push(vip.ports.bitmap);
    vipSolePort[v] = !vip.ports.all && vip.ports.size === 1 ? vip.ports.first : KEEP_PORT;
    for (let w = v - 1; w >= 0; w--) {
      if (vips[w]!.address.equals(vip.address)) {
        if (vipNextSame[w] === -1) vipNextSame[w] = v;
        break;
      }
    }
    if (vip.affinity !== null) {
      vipAffinity[v] = 1;
      vipAffinityMask.set(affinityMask(vip.address.family, vip.affinity.prefixLen), v * 16);
    }
    const addrs = new Uint8Array(vip.backends.length * 16);
    const ports = new Int32Array(vip.backends.length);
    const ups = new Uint8Array(vip.backends.length);
    backendUp.push(ups);
    const specs = vip.backends.map((b, i) => {
      addrs.set(b.address.bytes, i * 16);
      ports[i] = b.port === null ? KEEP_PORT : b.port;
      const isUp = up(vip, i);
      const w = weight(vip, i);
      const takesNew = isUp && w > 0 && eligible(vip, i);
      ups[i] = isUp ? BACKEND_UP | (takesNew ? BACKEND_ELIGIBLE : 0) : 0;
      return { id: backendId(vip, i), weight: w, eligible: takesNew };
    });
    const pv = previous === undefined ? undefined : previous.config.vips[v]?.name === vip.name ? v : previous.config.vips.findIndex((x) => x.name === vip.name);
    const prevTable = previous !== undefined && pv !== undefined && pv >= 0 ? previous.backendTables[pv] : undefined;
    backendTables.push(yield* backendTableSteps(specs, hashKey, generation, prevTable));
    backendAddr.push(addrs);
    backendPort.push(ports);
  }
  const ids = config.balancers.map((b) => b.id);
  const ranking =
    previous && sameIds(previous.ranking.ids, ids) ? previous.ranking : yield* balancerRankingSteps(ids, hashKey, generation);
  const ft: ForwardingTable = {
    generation,
    vipCount: n,
    vipAddr,
    vipFamily,
    vipMethod,
    vipProto,
    vipPorts,
    vipSolePort,
    vipNextSame,
    vipAffinity,
    vipAffinityMask,
    backendTables,
    backendAddr,
    backendPort,
    backendUp,
    ranking,
    config,
  };
  validate(ft);
  return ft;
}

function sameIds(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function validate(ft: ForwardingTable): void {
  const problems: string[] = [];
  for (let v = 0; v < ft.vipCount; v++) {
    const vip = ft.config.vips[v]!;
    const t = ft.backendTables[v]!;
    if (t.ids.length !== vip.backends.length) problems.push(`vip ${vip.name}: backend table has ${t.ids.length} backends, config ${vip.backends.length}`);
    for (const b of vip.backends) {
      if (b.address.family !== vip.address.family) problems.push(`vip ${vip.name}: backend ${b.address.text} is not IPv${vip.address.family}`);
    }
  }
  if (ft.ranking.ids.length !== ft.config.balancers.length) problems.push('balancer ranking does not match the balancer list');
  if (problems.length > 0) {
    throw new TunlbError(ErrorCodes.TABLE_BUILD, `forwarding table ${ft.generation} failed validation: ${problems.join('; ')}`, { problems });
  }
}

/**
 * Index of the VIP whose address is at buf[addrOff .. addrOff+addrLen) (4 or 16 bytes), or -1.
 * Hot path: a linear scan; clusters serve a handful of VIPs. No allocation.
 */
export function findVip(ft: ForwardingTable, buf: Uint8Array, addrOff: number, addrLen: number): number {
  const va = ft.vipAddr;
  const fam = addrLen === 4 ? 4 : 6;
  for (let v = 0; v < ft.vipCount; v++) {
    if (ft.vipFamily[v] !== fam) continue;
    let o = v * 16 + (fam === 4 ? 12 : 0);
    let i = 0;
    for (; i < addrLen; i++) if (va[o + i] !== buf[addrOff + i]) break;
    if (i === addrLen) return v;
  }
  return -1;
}

/**
 * Among VIP `v` (findVip's answer) and the later VIPs on its address (vipNextSame), the first
 * that serves protocol `proto` and, for TCP/UDP with `dport` > 0, that destination port; `v`
 * when none does (the admit step then drops the packet as not served). `dport` 0: a later
 * fragment (no L4 header): the first serving the protocol. Hot path: no allocation; called
 * only for an address several VIPs share.
 */
export function serviceVip(ft: ForwardingTable, v: number, proto: number, dport: number): number {
  const ported = proto === 6 || proto === 17;
  for (let w = v; w >= 0; w = ft.vipNextSame[w]!) {
    if (ft.vipProto[w * 256 + proto] === 0) continue;
    if (ported && dport > 0 && ((ft.vipPorts[w]![dport >>> 3]! >>> (dport & 7)) & 1) === 0) continue;
    return w;
  }
  return v;
}

/**
 * The backend a flow of VIP `vip` gets from the current table (a new flow, and the moves of
 * src/dataplane/forwarder.ts "Connection reuse" and "Backend down"): the backend table's row
 * of `flowHash` (the flow key's cluster hash), or, for a VIP with source affinity, of the
 * affinity hash of the key's client address (src/decision/affinity.ts; `scratch`: 40
 * caller-owned bytes). NO_BACKEND when the VIP has no eligible backend. Hot path: no allocation.
 */
export function pickBackend(ft: ForwardingTable, vip: number, hashKey: Uint32Array, key: Uint8Array, flowHash: number, scratch: Uint8Array): number {
  const t = ft.backendTables[vip]!;
  return ft.vipAffinity[vip] === 0 ? t.lookup(flowHash) : t.lookup(affinityHash(hashKey, key, ft.vipAffinityMask, vip * 16, scratch));
}
