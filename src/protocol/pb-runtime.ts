/**
 * The protobufjs runtime the generated code (src/protocol/generated/tunlb.js) requires
 * instead of `protobufjs/minimal` (scripts/build-proto.sh passes `--dependency ../pb-runtime`).
 *
 * Why: protobufjs 8 depends on `long` and, when it is present, decodes every 64-bit field as
 * a `Long` object, even with pbjs `--force-number` (that flag only changes the typings), and
 * the generated prototypes' defaults are `Long` zeros computed when the module loads. The
 * protocol only puts safe integers (< 2^53) in 64-bit fields, so numbers are exact and cheaper.
 * Turning `Long` off here, in the module the generated code requires first, guarantees the
 * configuration precedes the generated module whoever imports it first.
 *
 * Process-wide effect: protobufjs is a singleton, so any other protobufjs user in the process
 * also gets numbers for 64-bit fields. tunlb has no other user (docs/protocol.md "Balancer to balancer": protobuf is only
 * the balancer-to-balancer protocol).
 */
import protobuf = require('protobufjs/minimal');

(protobuf.util as { Long: unknown }).Long = undefined;
protobuf.configure();

export = protobuf;
