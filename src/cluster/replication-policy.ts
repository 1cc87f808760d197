/**
 * Which flows are replicated, and by whom (claim 3 under floods; docs/flow-records.md
 * "Confirmation and replication").
 *
 * Only CONFIRMED flows are replicated (FlowTable.touch sets the flag: evidence a blind spoofer
 * cannot give):
 *   - TCP through NAT: the client's ACK acknowledging the server's ISN + 1, which only a client
 *     that received the SYN-ACK knows (a spoofed source never sees it). The backend answers
 *     spoofed SYNs too, so a count of packets (IPVS's sync_threshold, this project's policy
 *     before issue 12) is no evidence: the SYN-ACK and its retransmits made a spoofed SYN
 *     "ready".
 *   - TCP through DSR: the client's first ACK after its SYN (the balancer never sees the
 *     server's ISN: replies bypass it). A blind spoofer that sends SYN then ACK gets replicated:
 *     it pays two packets per record, never amplified; a SYN-only flood replicates nothing.
 *   - UDP, ICMP echo, other protocols through NAT: a client packet after the server's answer
 *     (conntrack's "seen traffic both ways"): a single-datagram flood (every spoofed datagram
 *     a new 5-tuple) replicates nothing. A spoofer that sends two datagrams per 5-tuple, the
 *     second after the answer would have come, is confirmed (UDP carries nothing unguessable):
 *     it pays two packets per record, never amplified. A one-shot exchange (a DNS query and its
 *     answer) is never replicated: its record would arrive after the answer anyway.
 *   - the same through DSR: the flow's second client packet.
 * Records learnt from peers are confirmed on arrival (they come only from confirmed flows).
 *
 * Who sends the CREATE: the flow's PRIMARY. Every packet of a flow passes through its primary
 * (the receiver forwards client packets to it; the replies of an unconfirmed flow are steered
 * to it: src/dataplane/forwarder.ts #replyToPrimary), so the primary confirms every flow, also
 * when the receiver changes mid-handshake (ECMP), and the record leaves ~flushMs after the
 * confirming packet. When the primary is not live, the balancer that confirms sends it (the
 * flow's server then). The receiver that decided a flow it is not primary of sends nothing; it
 * adopts the primary's record when it arrives (src/cluster/replicator.ts).
 *
 * Unconfirmed entries are the first to go when the table is full (FlowTable "Full table",
 * whatever replies they have seen), and confirmed ones are never early-dropped.
 *
 * The forwarder (src/dataplane, a lower layer) applies the same rule inline (#confirmed).
 */

/**
 * True when this balancer (`selfIndex`) replicates a confirmed flow whose recorded primary is
 * `primary`: it is the primary, or the primary is not live (`live` absent, as in tests: not
 * known, so this balancer does).
 */
export function replicatesConfirmed(primary: number, selfIndex: number, live: Uint8Array | undefined): boolean {
  return primary === selfIndex || live === undefined || live[primary] === 0;
}
