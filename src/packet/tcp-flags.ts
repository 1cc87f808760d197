/**
 * TCP header flag bits (byte 13 of the TCP header; RFC 9293 3.1, RFC 3168 6.1 for ECE/CWR),
 * as PacketInfo.tcpFlags holds them. The one declaration: the forwarder, the flow table's state
 * machine, the RST builder and the GRO merge all use these.
 */
export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;
export const TCP_URG = 0x20;
export const TCP_ECE = 0x40;
export const TCP_CWR = 0x80;

/** The same bits as one object (the flow module's public TcpFlags). */
export const TcpFlags = { FIN: TCP_FIN, SYN: TCP_SYN, RST: TCP_RST, PSH: TCP_PSH, ACK: TCP_ACK } as const;
