/**
 * virtio_net_hdr (linux/virtio_net.h), as the TUN device exchanges it with TUNSETVNETHDRSZ 10
 * (no num_buffers): little-endian fields, one record per packet. The data plane keeps these in
 * PacketBatch.vnet (src/dataplane/packet-batch.ts re-exports them); the packet layer reads them
 * when it splits or merges TCP GSO packets (gso-split.ts, gso-merge.ts).
 */

/** Bytes of one virtio_net_hdr as the TUN device is configured (TUNSETVNETHDRSZ 10). */
export const VNET_HDR_LEN = 10;

/** flags */
export const VNET_F_NEEDS_CSUM = 1;
export const VNET_F_DATA_VALID = 2;
/** gso_type */
export const VNET_GSO_NONE = 0;
export const VNET_GSO_TCPV4 = 1;
export const VNET_GSO_UDP = 3;
export const VNET_GSO_TCPV6 = 4;
export const VNET_GSO_ECN = 0x80;

/** Byte offsets of the fields inside one VNET_HDR_LEN record. */
export const VNET_FLAGS = 0;
export const VNET_GSO_TYPE = 1;
export const VNET_HDR_LEN_FIELD = 2;
export const VNET_GSO_SIZE = 4;
export const VNET_CSUM_START = 6;
export const VNET_CSUM_OFFSET = 8;
