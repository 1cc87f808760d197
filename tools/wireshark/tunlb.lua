-- tunlb.lua: Wireshark/tshark dissector for tunlb's balancer-to-balancer traffic.
--
--   tshark -X lua_script:tools/wireshark/tunlb.lua -r capture.pcap
--   tshark -X lua_script:tools/wireshark/tunlb.lua -o tunlb.balancers:lb1,lb2,lb3 -r capture.pcap -V
--   Wireshark: copy this file into the personal Lua plugins folder (Help > About > Folders,
--   e.g. ~/.local/lib/wireshark/plugins/) and restart, or start it with -X lua_script:FILE.
--
-- What it decodes (docs/wireshark.md; the formats are documented in docs/protocol.md):
--   * protocol "tunlb_encap", the data port (UDP, default 7947; src/packet/encap.ts): the
--     20-byte encapsulation header (version, type, flags NEW_FLOW / REPLY / SECOND_CHANCE /
--     FAILOVER / VNET, primary, backup, backend, VIP, forwarding-table generation, the data-port
--     tag, shown, not verified; version 1, an older release's untagged 12-byte header, too), the
--     10-byte virtio_net_hdr when VNET is set, then the inner IPv4/IPv6 packet, handed to
--     Wireshark's ip / ipv6 dissector (so inner TCP, UDP, ICMP are decoded as usual).
--   * protocol "tunlb", the control port (UDP, default 7946; protocol/tunlb.proto): the
--     SignedEnvelope (the signed envelope bytes and the HMAC-SHA256 tag), the Envelope header
--     (version, cluster id, sender, incarnation, sequence, send time) and every body of
--     protocol version 1: flow records (with their flow keys, 13-byte compact IPv4 or 40-byte
--     form), probes and acks, bulk-sync requests and chunks (the first release's datagram
--     sync), health reports, balancer summaries (the cluster view), reload requests and answers
--     (`tunlb reload --cluster`).
--   * protocol "tunlb_sync", the bulk sync stream (TCP on the control port's number, default
--     7946; src/protocol/sync-frame.ts): frames (u32 length | SyncFrame | HMAC-SHA256),
--     reassembled across TCP segments: hello, welcome, request, chunks with their records,
--     refusal.
--
-- The protobuf is decoded here, from the schema tables below (a small reader of the protobuf
-- wire format), not by Wireshark's protobuf dissector: that one needs the .proto files set up in
-- a preference table, cannot see that SignedEnvelope.envelope holds an Envelope, and shows the
-- flow key as bytes. Fields this file does not know (a newer protocol) are shown as "Unknown
-- field N" and skipped, never reported as malformed: protobuf receivers skip them too.
--
-- The HMACs are shown, not verified: the dissector has no cluster key (`tunlb capture --decode
-- --config FILE` verifies the control port's).
--
-- Preferences (Edit > Preferences > Protocols, or tshark -o NAME:VALUE):
--   tunlb.ports        control and probe ports (range, default 7946,7948)
--   tunlb.balancers    balancer ids in the config's order ("lb1,lb2,lb3"): indexes are shown
--                      with their id ("1 (lb2)"); empty: as "#1"
--   tunlb_encap.ports  data ports (range, default 7947)
--   tunlb_sync.ports   TCP ports of the bulk sync stream (range, default 7946)
--
-- Extending: a new protobuf field is one row in MESSAGES (and one ProtoField); a new body is a
-- row in MESSAGES.Envelope plus, optionally, a summary function in SUMMARY. A new header
-- field of the data port goes into p_encap.dissector in header order.

-- Shown in Wireshark's About > Plugins.
if set_plugin_info then
  set_plugin_info({ version = "1.1.0", description = "tunlb: encapsulation (data port), control protocol (records, probes, sync, health), bulk sync stream (TCP)" })
end

-- Bit operations: Lua 5.2's bit32, Wireshark's "bit" (Lua BitOp), or Lua 5.3+'s operators
-- (compiled at run time, so that Lua 5.2 never parses them).
local bit = bit32 or bit
if bit == nil then
  bit = load("return { band = function(a, b) return a & b end, rshift = function(a, n) return a >> n end }")()
end

---------------------------------------------------------------------------------------------
-- Protocols and preferences

local p_ctl = Proto("tunlb", "tunlb control (balancer-to-balancer)")
local p_encap = Proto("tunlb_encap", "tunlb encapsulation (data port)")
local p_sync = Proto("tunlb_sync", "tunlb bulk sync stream (TCP)")

-- The control port (records, health, the first release's sync) and the probe port (probes
-- and acks: cluster.replication.probe_port, default 7948): the same envelopes on both.
local DEFAULT_CONTROL_PORTS = "7946,7948"
local DEFAULT_SYNC_PORTS = "7946"
local DEFAULT_DATA_PORTS = "7947"

p_ctl.prefs.ports = Pref.range("Control ports", DEFAULT_CONTROL_PORTS, "UDP ports of tunlb control datagrams (cluster.replication.control_port and probe_port)", 65535)
p_ctl.prefs.balancers = Pref.string("Balancer ids", "", "Comma-separated balancer ids in the configuration's order (e.g. lb1,lb2,lb3), to show indexes by name")
p_encap.prefs.ports = Pref.range("Data ports", DEFAULT_DATA_PORTS, "UDP ports of tunlb encapsulated packets (cluster.replication.data_port)", 65535)
p_sync.prefs.ports = Pref.range("Sync stream ports", DEFAULT_SYNC_PORTS, "TCP ports of the bulk sync stream (the control port's number, TCP)", 65535)

---------------------------------------------------------------------------------------------
-- Value strings

local OP_NAMES = { [0] = "unspecified", [1] = "create", [2] = "refresh", [3] = "delete" }
local STATUS_NAMES = { [0] = "unspecified", [1] = "syncing", [2] = "serving", [3] = "draining" }
local HEALTH_NAMES = { [0] = "no-health", [1] = "healthy", [2] = "unhealthy" }
local IPPROTO_NAMES = { [1] = "icmp", [2] = "igmp", [6] = "tcp", [17] = "udp", [41] = "ipv6-in-ipv4", [47] = "gre",
  [50] = "esp", [51] = "ah", [58] = "icmp6", [89] = "ospf", [103] = "pim", [112] = "vrrp", [132] = "sctp" }
local ENCAP_TYPES = { [0] = "data" }
local REFUSAL_NAMES = { [0] = "unspecified", [1] = "busy", [2] = "not-serving", [3] = "bad-request", [4] = "bad-version", [5] = "shutting-down" }
local GSO_TYPES = { [0] = "none", [1] = "tcpv4", [3] = "udp", [4] = "tcpv6", [5] = "udp_l4" }

---------------------------------------------------------------------------------------------
-- Fields: data port (src/packet/encap.ts)

local ef = {
  version = ProtoField.uint8("tunlb_encap.version", "Version", base.DEC, nil, 0xf0),
  type = ProtoField.uint8("tunlb_encap.type", "Type", base.DEC, ENCAP_TYPES, 0x0f),
  flags = ProtoField.uint8("tunlb_encap.flags", "Flags", base.HEX),
  f_new_flow = ProtoField.bool("tunlb_encap.flags.new_flow", "NEW_FLOW", 8, nil, 0x01, "The sender decided on a table miss (new record)"),
  f_reply = ProtoField.bool("tunlb_encap.flags.reply", "REPLY", 8, nil, 0x02, "A server's reply steered to the flow's primary (the receiving balancer has no record: docs/entry.md)"),
  f_second_chance = ProtoField.bool("tunlb_encap.flags.second_chance", "SECOND_CHANCE", 8, nil, 0x04, "The sender had no record and forwards to the ranked primary"),
  f_failover = ProtoField.bool("tunlb_encap.flags.failover", "FAILOVER", 8, nil, 0x08, "Sent to the backup: the primary is dead"),
  f_vnet = ProtoField.bool("tunlb_encap.flags.vnet", "VNET", 8, nil, 0x10, "A virtio_net_hdr follows the header"),
  f_reserved = ProtoField.uint8("tunlb_encap.flags.reserved", "Reserved", base.HEX, nil, 0xe0),
  flag_names = ProtoField.string("tunlb_encap.flags.names", "Flag names"),
  primary = ProtoField.uint8("tunlb_encap.primary", "Primary", base.DEC, nil, nil, "Balancer index (0xff: none)"),
  backup = ProtoField.uint8("tunlb_encap.backup", "Backup", base.DEC, nil, nil, "Balancer index (0xff: none)"),
  backend = ProtoField.uint16("tunlb_encap.backend", "Backend", base.DEC, nil, nil, "Backend index within the VIP (0xffff: none)"),
  vip = ProtoField.uint16("tunlb_encap.vip", "VIP", base.DEC),
  generation = ProtoField.uint32("tunlb_encap.generation", "Forwarding-table generation", base.DEC),
  tag = ProtoField.bytes("tunlb_encap.tag", "Data-port tag", base.NONE, "HalfSipHash-2-4-64 over the header, the inner flow key and sender -> receiver, keyed from the cluster key (src/decision/data-tag.ts); not verified here: use tunlb capture with the key"),
  vnet = ProtoField.none("tunlb_encap.vnet", "virtio_net_hdr"),
  vnet_flags = ProtoField.uint8("tunlb_encap.vnet.flags", "Flags", base.HEX),
  vnet_needs_csum = ProtoField.bool("tunlb_encap.vnet.needs_csum", "NEEDS_CSUM", 8, nil, 0x01),
  vnet_data_valid = ProtoField.bool("tunlb_encap.vnet.data_valid", "DATA_VALID", 8, nil, 0x02),
  vnet_gso_type = ProtoField.uint8("tunlb_encap.vnet.gso_type", "GSO type", base.DEC, GSO_TYPES, 0x7f),
  vnet_gso_ecn = ProtoField.bool("tunlb_encap.vnet.gso_ecn", "GSO ECN", 8, nil, 0x80),
  vnet_hdr_len = ProtoField.uint16("tunlb_encap.vnet.hdr_len", "Header length", base.DEC),
  vnet_gso_size = ProtoField.uint16("tunlb_encap.vnet.gso_size", "GSO size", base.DEC),
  vnet_csum_start = ProtoField.uint16("tunlb_encap.vnet.csum_start", "Checksum start", base.DEC),
  vnet_csum_offset = ProtoField.uint16("tunlb_encap.vnet.csum_offset", "Checksum offset", base.DEC),
  inner_len = ProtoField.uint32("tunlb_encap.inner_len", "Inner packet length", base.DEC),
}
p_encap.fields = ef

local ee = {
  truncated = ProtoExpert.new("tunlb_encap.truncated", "Truncated tunlb encapsulation header", expert.group.MALFORMED, expert.severity.ERROR),
  bad_version = ProtoExpert.new("tunlb_encap.bad_version", "Unknown encapsulation version (receivers drop it: ENCAP_BAD_VERSION)", expert.group.PROTOCOL, expert.severity.WARN),
  old_version = ProtoExpert.new("tunlb_encap.old_version", "Version 1: an older release's untagged header (receivers drop it: encap_old_version)", expert.group.PROTOCOL, expert.severity.WARN),
  bad_type = ProtoExpert.new("tunlb_encap.bad_type", "Unknown encapsulation type (receivers drop it: ENCAP_BAD_TYPE)", expert.group.PROTOCOL, expert.severity.WARN),
  bad_flags = ProtoExpert.new("tunlb_encap.bad_flags", "Reserved flag set (receivers drop it: ENCAP_BAD_FLAGS)", expert.group.PROTOCOL, expert.severity.WARN),
  not_ip = ProtoExpert.new("tunlb_encap.not_ip", "Inner packet is not IPv4 or IPv6", expert.group.MALFORMED, expert.severity.ERROR),
  inner_malformed = ProtoExpert.new("tunlb_encap.inner_malformed", "Inner packet is malformed (or cut short)", expert.group.MALFORMED, expert.severity.ERROR),
}
p_encap.experts = ee

---------------------------------------------------------------------------------------------
-- Fields: control port (protocol/tunlb.proto)

local cf = {
  -- SignedEnvelope
  envelope = ProtoField.bytes("tunlb.envelope", "Envelope (signed bytes)"),
  mac = ProtoField.bytes("tunlb.mac", "HMAC-SHA256"),
  -- Envelope
  version = ProtoField.uint32("tunlb.version", "Version", base.DEC),
  cluster_id = ProtoField.uint64("tunlb.cluster_id", "Cluster id", base.HEX),
  sender = ProtoField.uint32("tunlb.sender", "Sender", base.DEC),
  incarnation = ProtoField.uint64("tunlb.incarnation", "Incarnation", base.DEC),
  incarnation_time = ProtoField.absolute_time("tunlb.incarnation_time", "Incarnation started", base.UTC),
  seq = ProtoField.uint64("tunlb.seq", "Sequence", base.DEC),
  sent_at = ProtoField.absolute_time("tunlb.sent_at", "Sent at", base.UTC),
  recipients = ProtoField.uint32("tunlb.recipients", "Recipients", base.HEX, nil, nil, "Bit i = balancer index i; absent (0): every balancer"),
  body = ProtoField.string("tunlb.body", "Body"),
  -- FlowRecordBatch / FlowRecord
  records = ProtoField.none("tunlb.records", "Flow records"),
  record = ProtoField.none("tunlb.record", "Flow record"),
  rec_op = ProtoField.uint32("tunlb.record.op", "Op", base.DEC, OP_NAMES),
  rec_key = ProtoField.bytes("tunlb.record.key", "Key"),
  rec_primary = ProtoField.uint32("tunlb.record.primary", "Primary", base.DEC),
  rec_backup = ProtoField.uint32("tunlb.record.backup", "Backup", base.DEC),
  rec_vip = ProtoField.uint32("tunlb.record.vip", "VIP", base.DEC),
  rec_backend = ProtoField.uint32("tunlb.record.backend", "Backend", base.DEC, nil, nil, "Backend index within the VIP (0xffff: none)"),
  rec_state = ProtoField.uint32("tunlb.record.state", "State", base.DEC),
  rec_age = ProtoField.uint32("tunlb.record.age_s", "Age (s)", base.DEC),
  rec_idle = ProtoField.uint32("tunlb.record.idle_s", "Idle (s)", base.DEC),
  rec_table_gen = ProtoField.uint32("tunlb.record.table_generation", "Backend-table generation", base.DEC),
  rec_text = ProtoField.string("tunlb.record.text", "Record"),
  -- flow key (docs/contracts.md "Flow key"; protocol/tunlb.proto FlowRecord.key)
  key_form = ProtoField.string("tunlb.key.form", "Form"),
  key_src = ProtoField.ipv4("tunlb.key.src", "Source"),
  key_dst = ProtoField.ipv4("tunlb.key.dst", "Destination"),
  key_src6 = ProtoField.ipv6("tunlb.key.src6", "Source"),
  key_dst6 = ProtoField.ipv6("tunlb.key.dst6", "Destination"),
  key_sport = ProtoField.uint16("tunlb.key.sport", "Source port", base.DEC),
  key_dport = ProtoField.uint16("tunlb.key.dport", "Destination port", base.DEC),
  key_proto = ProtoField.uint8("tunlb.key.proto", "Protocol", base.DEC, IPPROTO_NAMES),
  key_ipver = ProtoField.uint8("tunlb.key.ipver", "IP version", base.DEC),
  key_text = ProtoField.string("tunlb.key.text", "Flow"),
  -- Probe / ProbeAck
  probe = ProtoField.none("tunlb.probe", "Probe"),
  probe_nonce = ProtoField.uint64("tunlb.probe.nonce", "Nonce", base.HEX),
  probe_sent = ProtoField.uint64("tunlb.probe.sent_at_ms", "Sent at (prober's monotonic ms)", base.DEC),
  probe_target = ProtoField.uint32("tunlb.probe.target", "Target", base.DEC),
  probe_status = ProtoField.uint32("tunlb.probe.status", "Status", base.DEC, STATUS_NAMES),
  ack = ProtoField.none("tunlb.probe_ack", "Probe ack"),
  ack_nonce = ProtoField.uint64("tunlb.probe_ack.nonce", "Nonce", base.HEX),
  ack_probe_sent = ProtoField.uint64("tunlb.probe_ack.probe_sent_at_ms", "Probe sent at (prober's monotonic ms)", base.DEC),
  ack_prober_inc = ProtoField.uint64("tunlb.probe_ack.prober_incarnation", "Prober incarnation", base.DEC),
  ack_status = ProtoField.uint32("tunlb.probe_ack.status", "Status", base.DEC, STATUS_NAMES),
  probe_config = ProtoField.uint64("tunlb.probe.config_hash", "Config hash", base.HEX),
  ack_config = ProtoField.uint64("tunlb.probe_ack.config_hash", "Config hash", base.HEX),
  -- BalancerSummary (the cluster view) / ReloadRequest / ReloadAnswer (reload --cluster)
  summary = ProtoField.none("tunlb.summary", "Balancer summary"),
  sum_status = ProtoField.uint32("tunlb.summary.status", "Status", base.DEC, STATUS_NAMES),
  sum_config = ProtoField.uint64("tunlb.summary.config_hash", "Config hash", base.HEX),
  sum_flows = ProtoField.uint32("tunlb.summary.flows_held", "Flows held", base.DEC),
  sum_primary = ProtoField.uint32("tunlb.summary.flows_primary", "Flows as primary", base.DEC),
  sum_backup = ProtoField.uint32("tunlb.summary.flows_backup", "Flows as backup", base.DEC),
  sum_pps_in = ProtoField.uint32("tunlb.summary.packets_in_per_s", "Packets/s in", base.DEC),
  sum_pps_out = ProtoField.uint32("tunlb.summary.packets_out_per_s", "Packets/s out", base.DEC),
  sum_bps_in = ProtoField.uint64("tunlb.summary.bytes_in_per_s", "Bytes/s in", base.DEC),
  sum_bps_out = ProtoField.uint64("tunlb.summary.bytes_out_per_s", "Bytes/s out", base.DEC),
  sum_uptime = ProtoField.uint32("tunlb.summary.uptime_s", "Uptime (s)", base.DEC),
  sum_generation = ProtoField.uint32("tunlb.summary.generation", "Forwarding generation", base.DEC),
  sum_rtts = ProtoField.bytes("tunlb.summary.peer_rtt_us", "Peer RTTs (packed varints, us)"),
  sum_live = ProtoField.uint32("tunlb.summary.live_mask", "Live mask", base.HEX),
  reload_request = ProtoField.none("tunlb.reload_request", "Reload request"),
  rreq_id = ProtoField.uint64("tunlb.reload_request.request_id", "Request id", base.HEX),
  reload_answer = ProtoField.none("tunlb.reload_answer", "Reload answer"),
  rans_id = ProtoField.uint64("tunlb.reload_answer.request_id", "Request id", base.HEX),
  rans_ok = ProtoField.bool("tunlb.reload_answer.ok", "Reloaded"),
  rans_config = ProtoField.uint64("tunlb.reload_answer.config_hash", "Config hash", base.HEX),
  rans_detail = ProtoField.string("tunlb.reload_answer.detail", "Detail"),
  -- SyncRequest / SyncChunk (datagram form)
  sync_request = ProtoField.none("tunlb.sync_request", "Sync request"),
  sreq_id = ProtoField.uint64("tunlb.sync_request.request_id", "Request id", base.HEX),
  sreq_from = ProtoField.uint32("tunlb.sync_request.from_cursor", "From cursor", base.DEC),
  sync_chunk = ProtoField.none("tunlb.sync_chunk", "Sync chunk"),
  schunk_id = ProtoField.uint64("tunlb.sync_chunk.request_id", "Request id", base.HEX),
  schunk_index = ProtoField.uint32("tunlb.sync_chunk.chunk_index", "Chunk index", base.DEC),
  schunk_next = ProtoField.uint32("tunlb.sync_chunk.next_cursor", "Next cursor", base.DEC),
  schunk_done = ProtoField.bool("tunlb.sync_chunk.done", "Done"),
  schunk_total = ProtoField.uint32("tunlb.sync_chunk.total_records", "Total records", base.DEC),
  schunk_snapshot = ProtoField.uint32("tunlb.sync_chunk.snapshot_records", "Snapshot records (stream)", base.DEC),
  -- SyncHello (sync stream: hello and welcome) / SyncRefusal
  hello = ProtoField.none("tunlb.sync_hello", "Hello"),
  welcome = ProtoField.none("tunlb.sync_welcome", "Welcome"),
  hello_version = ProtoField.uint32("tunlb.sync_hello.stream_version", "Stream version", base.DEC),
  hello_cluster_id = ProtoField.uint64("tunlb.sync_hello.cluster_id", "Cluster id", base.HEX),
  hello_sender = ProtoField.uint32("tunlb.sync_hello.sender", "Sender", base.DEC),
  hello_incarnation = ProtoField.uint64("tunlb.sync_hello.incarnation", "Incarnation", base.DEC),
  hello_nonce = ProtoField.bytes("tunlb.sync_hello.nonce", "Nonce"),
  refusal = ProtoField.none("tunlb.sync_refusal", "Refusal"),
  refusal_reason = ProtoField.uint32("tunlb.sync_refusal.reason", "Reason", base.DEC, REFUSAL_NAMES),
  refusal_detail = ProtoField.string("tunlb.sync_refusal.detail", "Detail"),
  -- HealthReport / BackendHealth
  health = ProtoField.none("tunlb.health", "Health report"),
  h_epoch = ProtoField.uint64("tunlb.health.epoch", "Epoch", base.DEC),
  h_seq = ProtoField.uint64("tunlb.health.sequence", "Sequence", base.DEC),
  h_periodic = ProtoField.bool("tunlb.health.periodic", "Periodic"),
  h_period = ProtoField.uint32("tunlb.health.period_ms", "Period (ms)", base.DEC),
  bh = ProtoField.none("tunlb.backend_health", "Backend health"),
  bh_vip = ProtoField.uint32("tunlb.backend_health.vip", "VIP", base.DEC),
  bh_backend = ProtoField.uint32("tunlb.backend_health.backend", "Backend", base.DEC),
  bh_id_hash = ProtoField.uint32("tunlb.backend_health.id_hash", "Id hash", base.HEX),
  bh_state = ProtoField.uint32("tunlb.backend_health.state", "State", base.DEC, HEALTH_NAMES),
  bh_reason = ProtoField.string("tunlb.backend_health.reason", "Reason"),
  bh_drain_stamp = ProtoField.uint64("tunlb.backend_health.drain_stamp", "Drain stamp", base.DEC),
  bh_drain_time = ProtoField.absolute_time("tunlb.backend_health.drain_time", "Drain command at", base.UTC),
  bh_drain_by = ProtoField.uint32("tunlb.backend_health.drain_by", "Drain command taken by", base.DEC),
  bh_drained = ProtoField.bool("tunlb.backend_health.drained", "Drained"),
  bh_weight_stamp = ProtoField.uint64("tunlb.backend_health.weight_stamp", "Runtime weight stamp", base.DEC),
  bh_weight = ProtoField.uint32("tunlb.backend_health.weight", "Runtime weight", base.DEC),
  bh_weight_set = ProtoField.bool("tunlb.backend_health.weight_set", "Runtime weight set (else: the file's)"),
  bh_maint_stamp = ProtoField.uint64("tunlb.backend_health.maint_stamp", "Maintenance stamp", base.DEC),
  bh_maintenance = ProtoField.bool("tunlb.backend_health.maintenance", "Maintenance"),
  -- anything this file does not know
  unknown = ProtoField.bytes("tunlb.unknown_field", "Unknown field"),
}
p_ctl.fields = cf

local ce = {
  malformed = ProtoExpert.new("tunlb.malformed", "Malformed tunlb control datagram", expert.group.MALFORMED, expert.severity.ERROR),
  bad_mac_len = ProtoExpert.new("tunlb.bad_mac_len", "MAC is not 32 bytes (receivers drop it: MALFORMED_OUTER)", expert.group.PROTOCOL, expert.severity.WARN),
  bad_version = ProtoExpert.new("tunlb.bad_version", "Envelope version this dissector does not know (receivers of version 1 drop it)", expert.group.PROTOCOL, expert.severity.WARN),
  no_body = ProtoExpert.new("tunlb.no_body", "Envelope without a body this dissector knows", expert.group.PROTOCOL, expert.severity.NOTE),
  unknown_field = ProtoExpert.new("tunlb.unknown_field.expert", "Field unknown to this dissector (skipped, as receivers do)", expert.group.UNDECODED, expert.severity.NOTE),
  wire_type = ProtoExpert.new("tunlb.wire_type", "Field has an unexpected protobuf wire type", expert.group.MALFORMED, expert.severity.ERROR),
  bad_key = ProtoExpert.new("tunlb.bad_key", "Flow key is neither 13 nor 40 bytes (receivers reject the record: BAD_RECORD)", expert.group.PROTOCOL, expert.severity.WARN),
}
p_ctl.experts = ce

---------------------------------------------------------------------------------------------
-- Names

local balancer_ids = {}

local function parse_balancers(s)
  local t = {}
  for id in string.gmatch(s or "", "[^,%s]+") do t[#t + 1] = id end
  return t
end

--- A balancer index as "lb2" (with the preference) or "#1"; 0xff: "none".
local function bname(i)
  if i == nil then return "?" end
  if i == 255 then return "none" end
  return balancer_ids[i + 1] or ("#" .. i)
end

--- Appends " (lb2)" to a balancer index item when the preference names it, " (none)" for 0xff.
local function name_item(item, i)
  if i == 255 then
    item:append_text(" (none)")
  elseif i ~= nil and balancer_ids[i + 1] then
    item:append_text(" (" .. balancer_ids[i + 1] .. ")")
  end
end

--- Appends " (none)" to a backend index item for 0xffff.
local function backend_item(item, i)
  if i == 65535 then item:append_text(" (none)") end
end

--- A 64-bit field's value as decimal text (values are safe integers: exact).
local function dec(n)
  if n == nil then return "0" end
  return string.format("%.0f", n)
end

---------------------------------------------------------------------------------------------
-- Protobuf wire format (https://protobuf.dev/programming-guides/encoding/)

local WT_VARINT, WT_I64, WT_LEN, WT_I32 = 0, 1, 2, 5
local WT_NAMES = { [0] = "varint", [1] = "i64", [2] = "len", [3] = "sgroup", [4] = "egroup", [5] = "i32" }

--- Reads a varint at tvb offset `off`, not past `stop`. Returns (number, UInt64, length) or nil.
--- The number is exact below 2^53 (every tunlb field is: safe integers, protocol/tunlb.proto).
local function read_varint(tvb, off, stop)
  local n = 0
  local u = UInt64(0)
  for i = 0, 9 do
    if off + i >= stop then return nil end
    local b = tvb(off + i, 1):uint()
    local low = bit.band(b, 0x7f)
    n = n + low * 2 ^ (7 * i)
    if low ~= 0 then u = u:bor(UInt64(low):lshift(7 * i)) end
    if b < 0x80 then return math.floor(n), u, i + 1 end -- math.floor: an integer on Lua 5.3+
  end
  return nil
end

-- Field kinds and the wire type each takes.
local KIND_WT = {
  uint32 = WT_VARINT, uint64 = WT_VARINT, enum = WT_VARINT, bool = WT_VARINT,
  fixed64 = WT_I64, fixed32 = WT_I32, bytes = WT_LEN, string = WT_LEN, message = WT_LEN,
}

---------------------------------------------------------------------------------------------
-- Schema: protocol/tunlb.proto, message by message.
-- A row: [field number] = { name, kind, field = ProtoField, msg = "Message" (kind message),
--   decode = function(tvb, off, len, item, tree, pinfo) for bytes with structure,
--   after = function(item, value) to decorate the item }.
-- `name` is the key of the decoded value in the table the reader returns (repeated fields:
-- a list); summaries (SUMMARY below) read those tables.

local MESSAGES = {}
local decode_key -- forward

local function ms_time(ms)
  local s = math.floor(ms / 1000)
  return NSTime(s, math.floor((ms - s * 1000) * 1e6))
end

MESSAGES.SignedEnvelope = {
  [1] = { name = "envelope", kind = "message", msg = "Envelope", field = cf.envelope },
  [2] = { name = "mac", kind = "bytes", field = cf.mac },
}

MESSAGES.Envelope = {
  [1] = { name = "version", kind = "uint32", field = cf.version },
  [2] = { name = "cluster_id", kind = "fixed64", field = cf.cluster_id },
  [3] = { name = "sender", kind = "uint32", field = cf.sender, after = name_item },
  [4] = { name = "incarnation", kind = "fixed64", field = cf.incarnation,
    extra = function(tree, range, n) tree:add(cf.incarnation_time, range, ms_time(math.floor(n / 2048))):set_generated() end },
  [5] = { name = "seq", kind = "uint64", field = cf.seq },
  [6] = { name = "sent_at_ms", kind = "fixed64", field = cf.sent_at, time_ms = true },
  [7] = { name = "recipients", kind = "fixed32", field = cf.recipients },
  -- the body oneof
  [10] = { name = "records", kind = "message", msg = "FlowRecordBatch", field = cf.records, body = "records" },
  [11] = { name = "probe", kind = "message", msg = "Probe", field = cf.probe, body = "probe" },
  [12] = { name = "probe_ack", kind = "message", msg = "ProbeAck", field = cf.ack, body = "probe-ack" },
  [13] = { name = "sync_request", kind = "message", msg = "SyncRequest", field = cf.sync_request, body = "sync-request" },
  [14] = { name = "sync_chunk", kind = "message", msg = "SyncChunk", field = cf.sync_chunk, body = "sync-chunk" },
  [15] = { name = "health", kind = "message", msg = "HealthReport", field = cf.health, body = "health" },
  [16] = { name = "summary", kind = "message", msg = "BalancerSummary", field = cf.summary, body = "summary" },
  [17] = { name = "reload_request", kind = "message", msg = "ReloadRequest", field = cf.reload_request, body = "reload-request" },
  [18] = { name = "reload_answer", kind = "message", msg = "ReloadAnswer", field = cf.reload_answer, body = "reload-answer" },
}

MESSAGES.BalancerSummary = {
  [1] = { name = "status", kind = "enum", field = cf.sum_status },
  [2] = { name = "config_hash", kind = "uint64", field = cf.sum_config },
  [3] = { name = "flows_held", kind = "uint32", field = cf.sum_flows },
  [4] = { name = "flows_primary", kind = "uint32", field = cf.sum_primary },
  [5] = { name = "flows_backup", kind = "uint32", field = cf.sum_backup },
  [6] = { name = "packets_in_per_s", kind = "uint32", field = cf.sum_pps_in },
  [7] = { name = "packets_out_per_s", kind = "uint32", field = cf.sum_pps_out },
  [8] = { name = "bytes_in_per_s", kind = "uint64", field = cf.sum_bps_in },
  [9] = { name = "bytes_out_per_s", kind = "uint64", field = cf.sum_bps_out },
  [10] = { name = "uptime_s", kind = "uint32", field = cf.sum_uptime },
  [11] = { name = "generation", kind = "uint32", field = cf.sum_generation },
  [12] = { name = "peer_rtt_us", kind = "bytes", field = cf.sum_rtts },
  [13] = { name = "live_mask", kind = "fixed32", field = cf.sum_live },
}

MESSAGES.ReloadRequest = {
  [1] = { name = "request_id", kind = "uint64", field = cf.rreq_id },
}

MESSAGES.ReloadAnswer = {
  [1] = { name = "request_id", kind = "uint64", field = cf.rans_id },
  [2] = { name = "ok", kind = "bool", field = cf.rans_ok },
  [3] = { name = "config_hash", kind = "uint64", field = cf.rans_config },
  [4] = { name = "detail", kind = "string", field = cf.rans_detail },
}

MESSAGES.FlowRecordBatch = {
  [1] = { name = "records", kind = "message", msg = "FlowRecord", field = cf.record, repeated = true },
}

MESSAGES.FlowRecord = {
  [1] = { name = "op", kind = "enum", field = cf.rec_op },
  [2] = { name = "key", kind = "bytes", field = cf.rec_key, decode = function(...) return decode_key(...) end },
  [3] = { name = "primary", kind = "uint32", field = cf.rec_primary, after = name_item },
  [4] = { name = "backup", kind = "uint32", field = cf.rec_backup, after = name_item },
  [5] = { name = "vip", kind = "uint32", field = cf.rec_vip },
  [6] = { name = "backend", kind = "uint32", field = cf.rec_backend, after = backend_item },
  [7] = { name = "state", kind = "uint32", field = cf.rec_state },
  [8] = { name = "age_s", kind = "uint32", field = cf.rec_age },
  [9] = { name = "idle_s", kind = "uint32", field = cf.rec_idle },
  [10] = { name = "table_generation", kind = "uint32", field = cf.rec_table_gen },
}

MESSAGES.Probe = {
  [1] = { name = "nonce", kind = "uint64", field = cf.probe_nonce },
  [2] = { name = "sent_at_ms", kind = "fixed64", field = cf.probe_sent },
  [3] = { name = "target", kind = "uint32", field = cf.probe_target, after = name_item },
  [4] = { name = "status", kind = "enum", field = cf.probe_status },
  [5] = { name = "config_hash", kind = "uint64", field = cf.probe_config },
}

MESSAGES.ProbeAck = {
  [1] = { name = "nonce", kind = "uint64", field = cf.ack_nonce },
  [2] = { name = "probe_sent_at_ms", kind = "fixed64", field = cf.ack_probe_sent },
  [3] = { name = "prober_incarnation", kind = "fixed64", field = cf.ack_prober_inc },
  [4] = { name = "status", kind = "enum", field = cf.ack_status },
  [5] = { name = "config_hash", kind = "uint64", field = cf.ack_config },
}

MESSAGES.SyncRequest = {
  [1] = { name = "request_id", kind = "uint64", field = cf.sreq_id },
  [2] = { name = "from_cursor", kind = "uint32", field = cf.sreq_from },
}

MESSAGES.SyncChunk = {
  [1] = { name = "request_id", kind = "uint64", field = cf.schunk_id },
  [2] = { name = "chunk_index", kind = "uint32", field = cf.schunk_index },
  [3] = { name = "next_cursor", kind = "uint32", field = cf.schunk_next },
  [4] = { name = "done", kind = "bool", field = cf.schunk_done },
  [5] = { name = "total_records", kind = "uint32", field = cf.schunk_total },
  [6] = { name = "records", kind = "message", msg = "FlowRecord", field = cf.record, repeated = true },
  [7] = { name = "snapshot_records", kind = "uint32", field = cf.schunk_snapshot },
}

-- The sync stream's frames (TCP; SyncFrame.body oneof).
MESSAGES.SyncFrame = {
  [1] = { name = "hello", kind = "message", msg = "SyncHello", field = cf.hello, body = "hello" },
  [2] = { name = "welcome", kind = "message", msg = "SyncHello", field = cf.welcome, body = "welcome" },
  [3] = { name = "request", kind = "message", msg = "SyncRequest", field = cf.sync_request, body = "sync-request" },
  [4] = { name = "chunk", kind = "message", msg = "SyncChunk", field = cf.sync_chunk, body = "sync-chunk" },
  [5] = { name = "refusal", kind = "message", msg = "SyncRefusal", field = cf.refusal, body = "refusal" },
}

MESSAGES.SyncHello = {
  [1] = { name = "stream_version", kind = "uint32", field = cf.hello_version },
  [2] = { name = "cluster_id", kind = "fixed64", field = cf.hello_cluster_id },
  [3] = { name = "sender", kind = "uint32", field = cf.hello_sender, after = name_item },
  [4] = { name = "incarnation", kind = "fixed64", field = cf.hello_incarnation },
  [5] = { name = "nonce", kind = "bytes", field = cf.hello_nonce },
}

MESSAGES.SyncRefusal = {
  [1] = { name = "reason", kind = "enum", field = cf.refusal_reason },
  [2] = { name = "detail", kind = "string", field = cf.refusal_detail },
}

MESSAGES.HealthReport = {
  [1] = { name = "epoch", kind = "fixed64", field = cf.h_epoch },
  [2] = { name = "sequence", kind = "uint64", field = cf.h_seq },
  [3] = { name = "periodic", kind = "bool", field = cf.h_periodic },
  [4] = { name = "period_ms", kind = "uint32", field = cf.h_period },
  [5] = { name = "backends", kind = "message", msg = "BackendHealth", field = cf.bh, repeated = true },
}

MESSAGES.BackendHealth = {
  [1] = { name = "vip", kind = "uint32", field = cf.bh_vip },
  [2] = { name = "backend", kind = "uint32", field = cf.bh_backend },
  [3] = { name = "id_hash", kind = "fixed32", field = cf.bh_id_hash },
  [4] = { name = "state", kind = "enum", field = cf.bh_state },
  [5] = { name = "reason", kind = "string", field = cf.bh_reason },
  [6] = { name = "drain_stamp", kind = "uint64", field = cf.bh_drain_stamp,
    -- (wall-clock ms of the command) * 32 + index of the balancer that took it
    extra = function(tree, range, n)
      tree:add(cf.bh_drain_time, range, ms_time(math.floor(n / 32))):set_generated()
      local by = n % 32
      local it = tree:add(cf.bh_drain_by, range, by)
      it:set_generated()
      name_item(it, by)
    end },
  [7] = { name = "drained", kind = "bool", field = cf.bh_drained },
  -- runtime overrides (tunlb weight / tunlb maintenance): stamps of the drain form
  [13] = { name = "weight_stamp", kind = "uint64", field = cf.bh_weight_stamp },
  [14] = { name = "weight", kind = "uint32", field = cf.bh_weight },
  [15] = { name = "weight_set", kind = "bool", field = cf.bh_weight_set },
  [16] = { name = "maint_stamp", kind = "uint64", field = cf.bh_maint_stamp },
  [17] = { name = "maintenance", kind = "bool", field = cf.bh_maintenance },
}

---------------------------------------------------------------------------------------------
-- The flow key of a record: 13-byte compact IPv4 form or the 40-byte contract form.

local function ep(addr, port, v6)
  if v6 then return "[" .. addr .. "]:" .. port end
  return addr .. ":" .. port
end

--- The text of a key, "10.99.1.2:40000→10.99.0.10:80/tcp" as `tunlb capture --decode` shows it.
local function key_text(src, dst, sport, dport, proto, v6)
  local pname = IPPROTO_NAMES[proto] or ("proto-" .. proto)
  if proto == 1 or proto == 58 then return src .. "→" .. dst .. "/" .. pname .. " id=" .. sport end
  return ep(src, sport, v6) .. "→" .. ep(dst, dport, v6) .. "/" .. pname
end

--- Decodes the key bytes at tvb(off, len) under `item`; returns its text (nil if not a key).
decode_key = function(tvb, off, len, item, tree, pinfo)
  local r = tvb(off, len)
  if len == 13 then
    item:add(cf.key_form, r, "compact IPv4 (13 bytes)"):set_generated()
    item:add(cf.key_src, tvb(off, 4))
    item:add(cf.key_dst, tvb(off + 4, 4))
    item:add(cf.key_sport, tvb(off + 8, 2))
    item:add(cf.key_dport, tvb(off + 10, 2))
    item:add(cf.key_proto, tvb(off + 12, 1))
    local t = key_text(tostring(tvb(off, 4):ipv4()), tostring(tvb(off + 4, 4):ipv4()),
      tvb(off + 8, 2):uint(), tvb(off + 10, 2):uint(), tvb(off + 12, 1):uint(), false)
    item:add(cf.key_text, r, t):set_generated()
    return t
  elseif len == 40 then
    local ver = tvb(off + 37, 1):uint()
    local src, dst
    if ver == 4 then
      item:add(cf.key_form, r, "40 bytes, IPv4 (IPv4-mapped addresses)"):set_generated()
      item:add(cf.key_src, tvb(off + 12, 4))
      item:add(cf.key_dst, tvb(off + 28, 4))
      src, dst = tostring(tvb(off + 12, 4):ipv4()), tostring(tvb(off + 28, 4):ipv4())
    else
      item:add(cf.key_form, r, "40 bytes"):set_generated()
      item:add(cf.key_src6, tvb(off, 16))
      item:add(cf.key_dst6, tvb(off + 16, 16))
      src, dst = tostring(tvb(off, 16):ipv6()), tostring(tvb(off + 16, 16):ipv6())
    end
    item:add(cf.key_sport, tvb(off + 32, 2))
    item:add(cf.key_dport, tvb(off + 34, 2))
    item:add(cf.key_proto, tvb(off + 36, 1))
    item:add(cf.key_ipver, tvb(off + 37, 1))
    local t = key_text(src, dst, tvb(off + 32, 2):uint(), tvb(off + 34, 2):uint(), tvb(off + 36, 1):uint(), ver ~= 4)
    item:add(cf.key_text, r, t):set_generated()
    return t
  end
  item:add_proto_expert_info(ce.bad_key, "Flow key of " .. len .. " bytes: neither 13 nor 40 (BAD_RECORD)")
  return nil
end

---------------------------------------------------------------------------------------------
-- The reader: one message at tvb[off, off+len), tree items as it goes.

local decode_message

-- Field numbers of each message in ascending order (for a stable display of defaults).
local FIELD_ORDER = {}
local function field_numbers(msg)
  local order = FIELD_ORDER[msg]
  if order == nil then
    order = {}
    for fnum in pairs(MESSAGES[msg] or {}) do order[#order + 1] = fnum end
    table.sort(order)
    FIELD_ORDER[msg] = order
  end
  return order
end

--- Decodes message `msg` at tvb[off, off + len) into `tree`; returns a table of its values
--- (field name -> number / UInt64-as-number / string / table; repeated: list) and
--- `ok` = false when the bytes are not valid protobuf (an expert item says where).
decode_message = function(msg, tvb, off, len, tree, pinfo, depth)
  local schema = MESSAGES[msg] or {}
  local vals = { _unknown = {} }
  local p, stop = off, off + len
  if depth > 8 then return vals, false end
  while p < stop do
    local tag, _, tlen = read_varint(tvb, p, stop)
    if tag == nil then
      tree:add_proto_expert_info(ce.malformed, msg .. ": truncated field tag at byte " .. (p - off))
      return vals, false
    end
    local fnum, wt = math.floor(tag / 8), tag % 8
    if fnum < 1 or fnum > 536870911 then -- field numbers are 1 .. 2^29 - 1
      tree:add_proto_expert_info(ce.malformed, msg .. ": field number " .. dec(fnum) .. " at byte " .. (p - off))
      return vals, false
    end
    local vstart = p + tlen
    local n, u, vlen
    if wt == WT_VARINT then
      local l
      n, u, l = read_varint(tvb, vstart, stop)
      if n == nil then tree:add_proto_expert_info(ce.malformed, msg .. ": truncated varint, field " .. fnum); return vals, false end
      vlen = l
    elseif wt == WT_I64 then
      if vstart + 8 > stop then tree:add_proto_expert_info(ce.malformed, msg .. ": truncated i64, field " .. fnum); return vals, false end
      u = tvb(vstart, 8):le_uint64()
      n = u:tonumber()
      vlen = 8
    elseif wt == WT_I32 then
      if vstart + 4 > stop then tree:add_proto_expert_info(ce.malformed, msg .. ": truncated i32, field " .. fnum); return vals, false end
      n = tvb(vstart, 4):le_uint()
      u = UInt64(n)
      vlen = 4
    elseif wt == WT_LEN then
      local l, _, ll = read_varint(tvb, vstart, stop)
      if l == nil or vstart + ll + l > stop then
        tree:add_proto_expert_info(ce.malformed, msg .. ": length of field " .. fnum .. " runs past the end")
        return vals, false
      end
      vstart = vstart + ll
      vlen = l
    else
      tree:add_proto_expert_info(ce.malformed, msg .. ": wire type " .. wt .. " (" .. (WT_NAMES[wt] or "?") .. ") of field " .. fnum)
      return vals, false
    end
    local whole = tvb(p, vstart + vlen - p)
    local spec = schema[fnum]
    if spec ~= nil and KIND_WT[spec.kind] == wt then
      local v, item
      if spec.kind == "message" then
        item = tree:add(spec.field, whole)
        local ok
        v, ok = decode_message(spec.msg, tvb, vstart, vlen, item, pinfo, depth + 1)
        if not ok then return vals, false end
        v._item = item
        v._range = whole
        if spec.body then vals._body = spec.body; vals._body_field = spec.name end
      elseif spec.kind == "bytes" or spec.kind == "string" then
        if vlen > 0 then item = tree:add(spec.field, tvb(vstart, vlen)) else item = tree:add(spec.field, whole, "") end
        if spec.kind == "string" then v = vlen > 0 and tvb(vstart, vlen):string() or "" else v = vlen end
        if spec.decode then v = spec.decode(tvb, vstart, vlen, item, tree, pinfo) or v end
      elseif spec.time_ms then
        v = n
        item = tree:add(spec.field, whole, ms_time(n))
      elseif spec.kind == "bool" then
        v = n ~= 0
        item = tree:add(spec.field, whole, v)
      elseif spec.kind == "uint64" or spec.kind == "fixed64" then
        v = n
        item = tree:add(spec.field, whole, u)
      else
        v = n
        item = tree:add(spec.field, whole, n)
      end
      if spec.after then spec.after(item, v) end
      if spec.extra then spec.extra(tree, whole, v) end
      if spec.repeated then
        local list = vals[spec.name] or {}
        list[#list + 1] = v
        vals[spec.name] = list
      else
        vals[spec.name] = v -- proto3: the last occurrence wins
      end
    elseif spec ~= nil then
      tree:add_proto_expert_info(ce.wire_type, msg .. "." .. spec.name .. ": wire type " .. (WT_NAMES[wt] or wt) .. ", expected " .. WT_NAMES[KIND_WT[spec.kind]])
      return vals, false
    else
      local item = tree:add(cf.unknown, whole)
      local shown = (wt == WT_LEN) and (vlen .. " bytes") or tostring(u)
      item:set_text(string.format("Unknown field %d (%s): %s", fnum, WT_NAMES[wt], shown))
      item:add_proto_expert_info(ce.unknown_field)
      vals._unknown[#vals._unknown + 1] = fnum
    end
    p = vstart + vlen
  end
  -- proto3 does not send zero values: show them, generated, so that filters such as
  -- tunlb.sender == 0 or tunlb.probe.target == 0 match what the receiver reads.
  for _, fnum in ipairs(field_numbers(msg)) do
    local spec = schema[fnum]
    if vals[spec.name] == nil and not spec.repeated and KIND_WT[spec.kind] ~= WT_LEN then
      local r = tvb(off, len)
      local item
      if spec.time_ms then
        item = tree:add(spec.field, r, ms_time(0))
      elseif spec.kind == "bool" then
        item = tree:add(spec.field, r, false)
      elseif spec.kind == "uint64" or spec.kind == "fixed64" then
        item = tree:add(spec.field, r, UInt64(0))
      else
        item = tree:add(spec.field, r, 0)
      end
      if spec.after then spec.after(item, 0) end
      item:append_text(" (absent: proto3 default)")
      item:set_generated()
    end
  end
  return vals, true
end

---------------------------------------------------------------------------------------------
-- Summaries (the Info column and the subtree labels), in the words of `tunlb capture --decode`.

local function record_text(r)
  local op = OP_NAMES[r.op or 0] or ("op-" .. tostring(r.op))
  local key = r.key
  if type(key) ~= "string" then key = "key(" .. tostring(key or 0) .. " bytes)" end
  local primary, backup = r.primary or 0, r.backup or 0
  local backend = r.backend or 0
  return string.format("%s %s primary=%s backup=%s backend=%s", op, key, bname(primary),
    backup == primary and "none" or bname(backup), backend == 65535 and "none" or ("#" .. backend))
end

local function label_records(list)
  for i, r in ipairs(list or {}) do
    local t = record_text(r)
    r._item:set_text(string.format("Flow record %d: %s", i, t))
    r._item:add(cf.rec_text, r._range, t):set_generated()
  end
end

local function hex(n)
  if n == nil then return "0" end
  if n < 2 ^ 53 then return string.format("%x", n) end
  return tostring(n)
end

-- body name -> function(envelope values, body values) -> Info text after "<sender> <body> seq=N"
local SUMMARY = {
  records = function(env, b)
    local list = b.records or {}
    label_records(list)
    b._item:append_text(string.format(": %d", #list))
    if #list == 0 then return "(empty)" end
    local s = record_text(list[1])
    if #list > 1 then s = string.format("[1/%d] %s (+%d more)", #list, s, #list - 1) end
    return s
  end,
  probe = function(env, b)
    local s = string.format("target=%s status=%s", bname(b.target or 0), STATUS_NAMES[b.status or 0] or tostring(b.status))
    b._item:append_text(": " .. s)
    return s
  end,
  ["probe-ack"] = function(env, b)
    local s = string.format("status=%s", STATUS_NAMES[b.status or 0] or tostring(b.status))
    b._item:append_text(": " .. s)
    return s
  end,
  ["sync-request"] = function(env, b)
    local s = string.format("id=%s from=%d", hex(b.request_id), b.from_cursor or 0)
    b._item:append_text(": " .. s)
    return s
  end,
  ["sync-chunk"] = function(env, b)
    label_records(b.records)
    local s = string.format("id=%s chunk=%d records=%d total=%d next=%d%s%s", hex(b.request_id), b.chunk_index or 0,
      #(b.records or {}), b.total_records or 0, b.next_cursor or 0,
      (b.snapshot_records or 0) ~= 0 and string.format(" snapshot=%d", b.snapshot_records) or "", b.done and " done" or "")
    b._item:append_text(": " .. s)
    return s
  end,
  hello = function(env, b)
    local s = string.format("sender=%s incarnation=%s stream_version=%d", bname(b.sender or 0), dec(b.incarnation), b.stream_version or 0)
    b._item:append_text(": " .. s)
    return s
  end,
  refusal = function(env, b)
    local s = REFUSAL_NAMES[b.reason or 0] or ("reason-" .. tostring(b.reason))
    if b.detail and b.detail ~= "" then s = s .. ' "' .. b.detail .. '"' end
    b._item:append_text(": " .. s)
    return s
  end,
  summary = function(env, b)
    local s = string.format("status=%s config=%s flows=%d primary=%d pps-in=%d pps-out=%d", STATUS_NAMES[b.status or 0] or tostring(b.status),
      hex(b.config_hash), b.flows_held or 0, b.flows_primary or 0, b.packets_in_per_s or 0, b.packets_out_per_s or 0)
    b._item:append_text(": " .. s)
    return s
  end,
  ["reload-request"] = function(env, b)
    local s = string.format("id=%s", hex(b.request_id))
    b._item:append_text(": " .. s)
    return s
  end,
  ["reload-answer"] = function(env, b)
    local s = string.format("id=%s %s config=%s", hex(b.request_id), b.ok and "ok" or "refused", hex(b.config_hash))
    if b.detail and b.detail ~= "" then s = s .. ' "' .. b.detail .. '"' end
    b._item:append_text(": " .. s)
    return s
  end,
  health = function(env, b)
    local list = b.backends or {}
    for _, h in ipairs(list) do
      local t = string.format("vip#%d #%d", h.vip or 0, h.backend or 0)
      if (h.state or 0) ~= 0 then t = t .. " " .. (HEALTH_NAMES[h.state] or ("state-" .. h.state)) end
      if (h.drain_stamp or 0) ~= 0 then t = t .. (h.drained and " drained" or " undrained") end
      if (h.weight_stamp or 0) ~= 0 then t = t .. (h.weight_set and (" weight=" .. tostring(h.weight or 0)) or " weight=file") end
      if (h.maint_stamp or 0) ~= 0 then t = t .. (h.maintenance and " maint" or " maint-off") end
      if h.reason and h.reason ~= "" then t = t .. ' "' .. h.reason .. '"' end
      h._item:append_text(": " .. t)
    end
    local s = string.format("%sbackends=%d", b.periodic and "periodic " or "", #list)
    b._item:append_text(": " .. s)
    return s
  end,
}

---------------------------------------------------------------------------------------------
-- Control port dissector

function p_ctl.dissector(tvb, pinfo, tree)
  local len = tvb:len()
  if len == 0 then return 0 end
  pinfo.cols.protocol:set("tunlb")
  local root = tree:add(p_ctl, tvb())
  local outer, ok = decode_message("SignedEnvelope", tvb, 0, len, root, pinfo, 0)
  local env = outer.envelope
  if not ok or env == nil then
    if ok then root:add_proto_expert_info(ce.malformed, "No envelope in the SignedEnvelope") end
    pinfo.cols.info:set("tunlb control: not a tunlb envelope (" .. len .. " bytes)")
    return len
  end
  if outer.mac ~= 32 then root:add_proto_expert_info(ce.bad_mac_len, "MAC of " .. tostring(outer.mac or 0) .. " bytes") end
  env._item:set_text("Envelope")
  local sender = env.sender or 0
  local body = env._body
  local head = string.format("%s %s seq=%s", bname(sender), body or "control", dec(env.seq))
  local info
  if (env.version or 0) ~= 1 then
    root:add_proto_expert_info(ce.bad_version, "Envelope version " .. tostring(env.version or 0))
  end
  if body == nil then
    root:add_proto_expert_info(ce.no_body)
    local u = env._unknown
    info = head .. ((#u > 0) and (" (unknown field " .. table.concat(u, ",") .. ")") or " (no body)")
  else
    root:add(cf.body, env[env._body_field]._range, body):set_generated()
    info = head .. " " .. SUMMARY[body](env, env[env._body_field])
  end
  root:append_text(string.format(", %s, Sender: %s, Incarnation: %s, Seq: %s", body or "no body", bname(sender),
    dec(env.incarnation), dec(env.seq)))
  pinfo.cols.info:set(info)
  return len
end

---------------------------------------------------------------------------------------------
-- Data port dissector

-- Version 2 (src/packet/encap.ts): 12 bytes of fields, then the 8-byte data-port tag. Version 1
-- (an older release, no tag) is the same fields in 12 bytes; receivers drop it.
local ENCAP_HEADER_LEN = 20
local ENCAP_V1_HEADER_LEN = 12
local ENCAP_VNET_LEN = 10
local FLAG_NAMES = { { 0x01, "NEW_FLOW" }, { 0x02, "REPLY" }, { 0x04, "SECOND_CHANCE" }, { 0x08, "FAILOVER" }, { 0x10, "VNET" } }

local ip_dissector = Dissector.get("ip")
local ipv6_dissector = Dissector.get("ipv6")
local data_dissector = Dissector.get("data")

function p_encap.dissector(tvb, pinfo, tree)
  local len = tvb:len()
  if len == 0 then return 0 end
  pinfo.cols.protocol:set("tunlb")
  local b0 = tvb(0, 1):uint()
  local version, etype = bit.rshift(b0, 4), bit.band(b0, 0x0f)
  local hlen = (version == 1) and ENCAP_V1_HEADER_LEN or ENCAP_HEADER_LEN
  local root = tree:add(p_encap, tvb(0, math.min(len, hlen)))
  if len <= hlen then
    root:add_proto_expert_info(ee.truncated, "Encapsulated datagram of " .. len .. " bytes (header is " .. hlen .. ")")
    pinfo.cols.info:set("tunlb encap: truncated (" .. len .. " bytes)")
    return len
  end
  local vi = root:add(ef.version, tvb(0, 1))
  local ti = root:add(ef.type, tvb(0, 1))
  if version == 1 then vi:add_proto_expert_info(ee.old_version) end
  if version ~= 2 and version ~= 1 then
    vi:add_proto_expert_info(ee.bad_version)
    pinfo.cols.info:set(string.format("tunlb encap: version %d (not decoded)", version))
    data_dissector:call(tvb(1):tvb(), pinfo, tree)
    return len
  end
  if etype ~= 0 then
    ti:add_proto_expert_info(ee.bad_type)
    pinfo.cols.info:set(string.format("tunlb encap: type %d (not decoded)", etype))
    data_dissector:call(tvb(1):tvb(), pinfo, tree)
    return len
  end

  local flags = tvb(1, 1):uint()
  local fi = root:add(ef.flags, tvb(1, 1))
  fi:add(ef.f_new_flow, tvb(1, 1))
  fi:add(ef.f_reply, tvb(1, 1))
  fi:add(ef.f_second_chance, tvb(1, 1))
  fi:add(ef.f_failover, tvb(1, 1))
  fi:add(ef.f_vnet, tvb(1, 1))
  local ri = fi:add(ef.f_reserved, tvb(1, 1))
  local names = {}
  for _, f in ipairs(FLAG_NAMES) do
    if bit.band(flags, f[1]) ~= 0 then names[#names + 1] = f[2] end
  end
  local ftext = (#names > 0) and table.concat(names, "|") or "-"
  fi:append_text(" (" .. ftext .. ")")
  fi:add(ef.flag_names, tvb(1, 1), ftext):set_generated()
  if bit.band(flags, 0xe0) ~= 0 then ri:add_proto_expert_info(ee.bad_flags) end

  local primary, backup = tvb(2, 1):uint(), tvb(3, 1):uint()
  name_item(root:add(ef.primary, tvb(2, 1)), primary)
  name_item(root:add(ef.backup, tvb(3, 1)), backup)
  backend_item(root:add(ef.backend, tvb(4, 2)), tvb(4, 2):uint())
  root:add(ef.vip, tvb(6, 2))
  root:add(ef.generation, tvb(8, 4))
  if version == 2 then root:add(ef.tag, tvb(12, 8)) end
  local backend = tvb(4, 2):uint()

  local off = hlen
  local gso = ""
  if bit.band(flags, 0x10) ~= 0 then
    if len <= hlen + ENCAP_VNET_LEN then
      root:add_proto_expert_info(ee.truncated, "VNET set, but no room for the virtio_net_hdr")
      pinfo.cols.info:set("tunlb encap: truncated virtio_net_hdr")
      return len
    end
    -- struct virtio_net_hdr (linux/virtio_net.h), little-endian as the TUN device uses it.
    local v = tvb(off, ENCAP_VNET_LEN)
    local vt = root:add(ef.vnet, v)
    local vf = vt:add(ef.vnet_flags, tvb(off, 1))
    vf:add(ef.vnet_needs_csum, tvb(off, 1))
    vf:add(ef.vnet_data_valid, tvb(off, 1))
    vt:add(ef.vnet_gso_type, tvb(off + 1, 1))
    vt:add(ef.vnet_gso_ecn, tvb(off + 1, 1))
    vt:add_le(ef.vnet_hdr_len, tvb(off + 2, 2))
    vt:add_le(ef.vnet_gso_size, tvb(off + 4, 2))
    vt:add_le(ef.vnet_csum_start, tvb(off + 6, 2))
    vt:add_le(ef.vnet_csum_offset, tvb(off + 8, 2))
    local gt = bit.band(tvb(off + 1, 1):uint(), 0x7f)
    if gt ~= 0 then
      gso = string.format(" gso=%s/%d", GSO_TYPES[gt] or tostring(gt), tvb(off + 4, 2):le_uint())
    elseif bit.band(tvb(off, 1):uint(), 1) ~= 0 then
      gso = " csum=partial"
    end
    off = off + ENCAP_VNET_LEN
  end
  root:set_len(off)
  root:add(ef.inner_len, tvb(off), len - off):set_generated()

  local head = string.format("tunlb encap %s primary=%s backup=%s backend=%s%s │ ", ftext, bname(primary), bname(backup),
    backend == 65535 and "none" or ("#" .. backend), gso)
  root:append_text(string.format(", %s, Primary: %s, Backup: %s", ftext, bname(primary), bname(backup)))
  pinfo.cols.info:set(head)
  -- The inner packet's dissectors write their own Info after this prefix.
  pinfo.cols.info:fence()

  local inner = tvb(off):tvb()
  local iv = bit.rshift(tvb(off, 1):uint(), 4)
  if iv == 4 or iv == 6 then
    -- A damaged inner packet makes Wireshark's dissector throw; from Lua that is an error,
    -- caught here and shown as what it is (the header above stays decoded).
    local ok = pcall(Dissector.call, iv == 4 and ip_dissector or ipv6_dissector, inner, pinfo, tree)
    if not ok then root:add_proto_expert_info(ee.inner_malformed) end
  else
    root:add_proto_expert_info(ee.not_ip, "IP version nibble " .. iv)
    data_dissector:call(inner, pinfo, tree)
  end
  return len
end

---------------------------------------------------------------------------------------------
-- Bulk sync stream (TCP on the control port's number; protocol/tunlb.proto "bulk sync
-- stream", src/protocol/sync-frame.ts):
--   frame = length (u32, big-endian: the bytes that follow) | SyncFrame | mac (32 bytes)
-- Frames are reassembled across TCP segments. The MAC (HMAC-SHA256 over the direction, the
-- frame's number in its direction and the SyncFrame; the session key after the hellos) is
-- shown, not verified.

local SYNC_PREFIX = 4
local SYNC_MAC_LEN = 32
local SYNC_MAX_FRAME = 1048576 -- src/protocol/sync-frame.ts SYNC_MAX_FRAME: readers refuse longer frames

local sf = {
  length = ProtoField.uint32("tunlb_sync.length", "Frame length", base.DEC),
  direction = ProtoField.string("tunlb_sync.direction", "Direction"),
  frame = ProtoField.string("tunlb_sync.frame", "Frame"),
  body = ProtoField.none("tunlb_sync.body", "SyncFrame"),
  mac = ProtoField.bytes("tunlb_sync.mac", "HMAC-SHA256"),
}
p_sync.fields = sf

local se = {
  bad_length = ProtoExpert.new("tunlb_sync.bad_length", "Frame length out of range (readers close the connection: MALFORMED_FRAME)", expert.group.MALFORMED, expert.severity.ERROR),
  no_body = ProtoExpert.new("tunlb_sync.no_body", "SyncFrame without a body this dissector knows", expert.group.PROTOCOL, expert.severity.NOTE),
}
p_sync.experts = se

--- True when `port` is in the range preference text ("7946", "7946,8000-8010").
local function in_range(range, port)
  for part in string.gmatch(range or "", "[^,%s]+") do
    local lo, hi = string.match(part, "^(%d+)-(%d+)$")
    if lo then
      if port >= tonumber(lo) and port <= tonumber(hi) then return true end
    elseif tonumber(part) == port then
      return true
    end
  end
  return false
end

local function sync_pdu_len(tvb, pinfo, offset)
  local flen = tvb(offset, SYNC_PREFIX):uint()
  -- A length no reader accepts: take what is there (the connection is closed after it).
  if flen < SYNC_MAC_LEN + 1 or flen > SYNC_MAX_FRAME then return tvb:len() - offset end
  return SYNC_PREFIX + flen
end

local sync_last_frame = -1

local function sync_pdu(tvb, pinfo, tree)
  local len = tvb:len()
  local root = tree:add(p_sync, tvb())
  local flen = tvb(0, SYNC_PREFIX):uint()
  local li = root:add(sf.length, tvb(0, SYNC_PREFIX))
  -- the requester connects to the responder's port
  local dir = in_range(p_sync.prefs.ports, pinfo.dst_port) and "requester → responder" or "responder → requester"
  root:add(sf.direction, tvb(0, 0), dir):set_generated()
  local info
  if flen < SYNC_MAC_LEN + 1 or flen > SYNC_MAX_FRAME or SYNC_PREFIX + flen ~= len then
    li:add_proto_expert_info(se.bad_length, "Frame length " .. flen)
    info = "sync stream: bad frame length " .. flen
  else
    local blen = flen - SYNC_MAC_LEN
    local body_tree = root:add(sf.body, tvb(SYNC_PREFIX, blen))
    local vals, ok = decode_message("SyncFrame", tvb, SYNC_PREFIX, blen, body_tree, pinfo, 0)
    root:add(sf.mac, tvb(SYNC_PREFIX + blen, SYNC_MAC_LEN))
    local body = vals._body
    if not ok then
      info = "sync stream: frame does not decode"
    elseif body == nil then
      root:add_proto_expert_info(se.no_body)
      info = "sync " .. ((#vals._unknown > 0) and ("(unknown field " .. table.concat(vals._unknown, ",") .. ")") or "(no body)")
    else
      -- frame names on the stream: hello, welcome, request, chunk, refusal
      local name = string.gsub(body, "^sync%-", "")
      root:add(sf.frame, vals[vals._body_field]._range, name):set_generated()
      local summary = SUMMARY[body == "welcome" and "hello" or body]
      info = "sync " .. name .. " " .. summary(vals, vals[vals._body_field])
      body = name
    end
    root:append_text(", " .. dir .. ", " .. (body or "?"))
  end
  pinfo.cols.protocol:set("tunlb")
  -- several frames in one segment: one Info, frames separated by "; "
  if sync_last_frame == pinfo.number then
    pinfo.cols.info:append("; " .. info)
  else
    pinfo.cols.info:set(info)
    sync_last_frame = pinfo.number
  end
  return len
end

function p_sync.dissector(tvb, pinfo, tree)
  sync_last_frame = -1
  dissect_tcp_pdus(tvb, tree, SYNC_PREFIX, sync_pdu_len, sync_pdu, true)
  return tvb:len()
end

---------------------------------------------------------------------------------------------
-- Registration on the configured ports (and again when the preferences change).

local udp_table = DissectorTable.get("udp.port")
local tcp_table = DissectorTable.get("tcp.port")
local registered = { ctl = nil, encap = nil, sync = nil }

local function register_ports()
  if registered.ctl then udp_table:remove(registered.ctl, p_ctl) end
  if registered.encap then udp_table:remove(registered.encap, p_encap) end
  if registered.sync then tcp_table:remove(registered.sync, p_sync) end
  registered.ctl = p_ctl.prefs.ports
  registered.encap = p_encap.prefs.ports
  registered.sync = p_sync.prefs.ports
  udp_table:add(registered.ctl, p_ctl)
  udp_table:add(registered.encap, p_encap)
  tcp_table:add(registered.sync, p_sync)
  balancer_ids = parse_balancers(p_ctl.prefs.balancers)
end

function p_ctl.prefs_changed() register_ports() end
function p_encap.prefs_changed() register_ports() end
function p_sync.prefs_changed() register_ports() end

register_ports()
