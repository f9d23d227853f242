// The Ponder client for Node.js, on the official @grpc/grpc-js and @grpc/proto-loader.
//
//   const { connect, decodeError } = require("ponder-client");
//   const { ponder } = connect({ address: "ponder.example.com:50051", token, ca: "ca.pem" });
//   ponder.Ask({ prompt: "What is 17 * 23?" }, { deadline: Date.now() + 120e3 }, (err, reply) => ...);
//
// The .proto files are the package's own (protos/, bundled at pack time; PONDER_PROTOS overrides).
// Types: index.d.ts.
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");

const PROTOS = process.env.PONDER_PROTOS || path.join(__dirname, "protos");

const definition = protoLoader.loadSync(["ponder/v1/ponder.proto", "ponder/v1/admin.proto"], {
  includeDirs: [PROTOS],
  keepCase: true, // field names as in the .proto: request_id, not requestId
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const v1 = grpc.loadPackageDefinition(definition).ponder.v1;

// Same retry policy as the Python client: UNAVAILABLE only, with backoff; the
// daemon's grpc-retry-pushback-ms sets the wait when it sends one.
const SERVICE_CONFIG = {
  methodConfig: [
    {
      name: [{ service: "ponder.v1.PonderService" }, { service: "ponder.v1.AdminService" }],
      retryPolicy: {
        maxAttempts: 4,
        initialBackoff: "0.2s",
        maxBackoff: "5s",
        backoffMultiplier: 2,
        retryableStatusCodes: ["UNAVAILABLE"],
      },
    },
  ],
};

// Options: address ("HOST:PORT"), token (a `pnd_…` key), and for TLS ca (PEM
// file of the CA that signed the daemon's certificate), cert and key (this
// client's certificate, for mutual TLS), tls (true: TLS with the system roots).
function credentials({ token, ca, cert, key, tls }) {
  const read = (file) => (file ? fs.readFileSync(file) : null);
  if (!(tls || ca || cert)) {
    if (token) {
      // grpc-js sends call credentials only over a secure channel: add the header per call instead.
      return { channel: grpc.credentials.createInsecure(), perCall: token };
    }
    return { channel: grpc.credentials.createInsecure(), perCall: null };
  }
  let channel = grpc.credentials.createSsl(read(ca), read(key), read(cert));
  if (token) {
    const bearer = grpc.credentials.createFromMetadataGenerator((_params, callback) => {
      const md = new grpc.Metadata();
      md.set("authorization", `Bearer ${token}`);
      callback(null, md);
    });
    channel = grpc.credentials.combineChannelCredentials(channel, bearer);
  }
  return { channel, perCall: null };
}

// The methods whose requests carry an idempotency key (as the Python client: Ask and AskStream).
const KEYED = new Set(["Ask", "AskStream"]);

// The request as sent: Ask and AskStream get a fresh UUID idempotency key unless the caller gave one
// ("" sends none). It is set once per call, before grpc-js serialises the message, so every retry
// grpc-js makes of that call (the retry policy below) carries the same key and the daemon answers
// and charges it once; a retry of an answered ask gets the stored reply (`replayed: true`).
function withIdempotencyKey(method, request) {
  if (!KEYED.has(method)) return request;
  const given = request && request.idempotency_key;
  if (given !== undefined && given !== null) return request;
  return { ...request, idempotency_key: crypto.randomUUID() };
}

function wrap(client, token) {
  // Each unary/stream method: the idempotency key on Ask and AskStream, and the bearer token in the
  // call's metadata when the channel cannot carry it (plaintext).
  const wrapped = Object.create(client);
  for (const name of Object.keys(Object.getPrototypeOf(client))) {
    const method = client[name];
    if (typeof method !== "function" || !method.path) continue;
    wrapped[name] = (request, ...rest) => {
      const md = rest[0] instanceof grpc.Metadata ? rest.shift() : new grpc.Metadata();
      if (token) md.set("authorization", `Bearer ${token}`);
      return method.call(client, withIdempotencyKey(name, request), md, ...rest);
    };
  }
  return wrapped;
}

function connect(options = {}) {
  const address = options.address || process.env.PONDER_ADDRESS || "127.0.0.1:50051";
  const { channel, perCall } = credentials(options);
  const channelOptions = {
    "grpc.service_config": JSON.stringify(SERVICE_CONFIG),
    "grpc.enable_retries": 1,
  };
  if (options.serverName) channelOptions["grpc.ssl_target_name_override"] = options.serverName;
  if (options.interceptors) channelOptions.interceptors = options.interceptors;
  const ponder = new v1.PonderService(address, channel, { ...channelOptions });
  const admin = new v1.AdminService(address, channel, { ...channelOptions });
  return { ponder: wrap(ponder, perCall), admin: wrap(admin, perCall), close: () => (ponder.close(), admin.close()) };
}

// google.rpc.Status from the grpc-status-details-bin trailer, details unpacked.
const rpc = new protobuf.Root();
rpc.resolvePath = (_origin, target) =>
  target.startsWith("google/protobuf/") ? target : path.join(__dirname, target);
rpc.loadSync("google/rpc/status.proto", { keepCase: true });
rpc.resolveAll();
const Status = rpc.lookupType("google.rpc.Status");

function decodeError(err) {
  const raw = err && err.metadata ? err.metadata.get("grpc-status-details-bin") : [];
  const out = { code: err.code, status: grpc.status[err.code], message: err.details, reason: "", metadata: {}, details: [] };
  if (!raw.length) return out;
  const status = Status.decode(raw[0]);
  for (const any of status.details) {
    const name = any.type_url.split("/").pop();
    const type = rpc.lookupTypeOrEnum(name);
    const detail = type.toObject(type.decode(any.value), { longs: String, defaults: true });
    out.details.push({ type: name, ...detail });
    if (name === "google.rpc.ErrorInfo") {
      out.reason = detail.reason;
      out.metadata = detail.metadata;
    }
  }
  return out;
}

module.exports = { connect, decodeError, withIdempotencyKey, grpc, PROTOS };
