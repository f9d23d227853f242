#!/usr/bin/env node
// Ask the Ponder daemon a question from Node.js.
//
//   PONDER_ADDRESS=ponder.example.com:50051 PONDER_TOKEN=pnd_… PONDER_TLS_CA=ca.pem node ask.js "What is 17 * 23?"
//
// PONDER_TLS_CERT and PONDER_TLS_KEY add a client certificate (mutual TLS).
"use strict";

const { connect, decodeError } = require("./ponder");

const prompt = process.argv.slice(2).join(" ") || "What is 17 * 23?";
const { ponder, close } = connect({
  address: process.env.PONDER_ADDRESS,
  token: process.env.PONDER_TOKEN,
  ca: process.env.PONDER_TLS_CA,
  cert: process.env.PONDER_TLS_CERT,
  key: process.env.PONDER_TLS_KEY,
});

ponder.Ask({ prompt }, { deadline: Date.now() + 600e3 }, (err, reply) => {
  close();
  if (err) {
    const e = decodeError(err);
    console.error(`ponder: ${e.status}: ${e.message}${e.reason ? ` (${e.reason})` : ""}`);
    if (e.reason === "BUDGET_EXHAUSTED") console.error(`budget renews at ${e.metadata.window_end}`);
    process.exit(1);
  }
  console.log(reply.text);
  console.log(`answer ${JSON.stringify(reply.answer)}; level ${reply.plan.level}; cost ${reply.cost} ${reply.balance.currency}; request ${reply.request_id}`);
});
