#!/usr/bin/env node
// `npm pack` / `npm publish` run this first (the prepack script): it copies the API's .proto files
// from the repository's protos/ into this package's protos/, so the package carries the API it
// speaks and never reads ../../protos. The copy is committed too; `make proto` refreshes it and
// tests/clients/test_node_package.py checks that it equals protos/.
"use strict";

const fs = require("node:fs");
const path = require("node:path");

const source = path.join(__dirname, "..", "..", "..", "protos", "ponder", "v1");
const target = path.join(__dirname, "..", "protos", "ponder", "v1");

if (!fs.existsSync(source)) {
  // Packing outside the repository (from an unpacked tarball): the bundled copy is all there is.
  if (!fs.existsSync(target)) throw new Error(`no protos: neither ${source} nor ${target} exists`);
  process.exit(0);
}
fs.mkdirSync(target, { recursive: true });
for (const name of fs.readdirSync(source).filter((f) => f.endsWith(".proto"))) {
  fs.copyFileSync(path.join(source, name), path.join(target, name));
}
