#!/usr/bin/env bash
# Generates the static protobuf code for protocol/tunlb.proto into src/protocol/generated/
# (git-ignored; never hand-edited). Run by `npm run build:proto`; idempotent.
#
#   tunlb.js    pbjs static-module, CommonJS, requiring protobufjs/minimal (no reflection)
#   tunlb.d.ts  pbts typings for it
#
# --force-number: 64-bit fields are JS numbers (the protocol only puts safe integers in them,
# see protocol/tunlb.proto), never Long objects.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out=src/protocol/generated
mkdir -p "$out"
bin=node_modules/.bin
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

"$bin/pbjs" -t static-module -w commonjs --force-number --no-verify --no-convert --no-delimited \
  --no-typeurl --no-service --dependency ../pb-runtime \
  -o "$tmp/tunlb.js" protocol/tunlb.proto
"$bin/pbts" -o "$tmp/tunlb.d.ts" "$tmp/tunlb.js"
mv "$tmp/tunlb.js" "$tmp/tunlb.d.ts" "$out/"
echo "build-proto: wrote $out/tunlb.js and $out/tunlb.d.ts"
