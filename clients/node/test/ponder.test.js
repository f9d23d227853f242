// Run by tests/clients/test_node_client.py against a real daemon it starts:
// PONDER_TEST_ADDRESS, PONDER_TEST_TOKEN (tenant "local"), PONDER_TEST_TINY_TOKEN (a tenant with no budget left).
"use strict";

const test = require("node:test");
const assert = require("node:assert");
const { execFile } = require("node:child_process");
const path = require("node:path");
const { connect, decodeError, grpc } = require("../ponder");

const address = process.env.PONDER_TEST_ADDRESS;
const token = process.env.PONDER_TEST_TOKEN;

const unary = (client, method, request) =>
  new Promise((resolve, reject) =>
    client[method](request, { deadline: Date.now() + 300e3 }, (err, reply) => (err ? reject(err) : resolve(reply))),
  );

test("GetBalance and Quote answer with the tenant's key", async () => {
  const { ponder, close } = connect({ address, token });
  try {
    const { balance } = await unary(ponder, "GetBalance", {});
    assert.strictEqual(balance.tenant, "local");
    const quote = await unary(ponder, "Quote", { prompt: "What is 2 + 2?" });
    assert.ok(quote.plan.level.length > 0);
    assert.ok(quote.plan.worst_case_cost > 0);
  } finally {
    close();
  }
});

test("an exhausted budget decodes to BUDGET_EXHAUSTED with QuotaFailure and the renewal time", async () => {
  const { ponder, close } = connect({ address, token: process.env.PONDER_TEST_TINY_TOKEN });
  try {
    await assert.rejects(unary(ponder, "Ask", { prompt: "Name a colour." }), (err) => {
      const e = decodeError(err);
      assert.strictEqual(e.code, grpc.status.RESOURCE_EXHAUSTED);
      assert.strictEqual(e.reason, "BUDGET_EXHAUSTED");
      assert.ok(!Number.isNaN(Date.parse(e.metadata.window_end)));
      const quota = e.details.find((d) => d.type === "google.rpc.QuotaFailure");
      assert.strictEqual(quota.violations[0].subject, "tenant:tiny");
      return true;
    });
  } finally {
    close();
  }
});

test("a wrong key is UNAUTHENTICATED with its reason", async () => {
  const { ponder, close } = connect({ address, token: "pnd_nokey_nosecret" });
  try {
    await assert.rejects(unary(ponder, "GetBalance", {}), (err) => {
      const e = decodeError(err);
      assert.strictEqual(e.status, "UNAUTHENTICATED");
      assert.strictEqual(e.reason, "UNAUTHENTICATED");
      return true;
    });
  } finally {
    close();
  }
});

test("AskStream sends the plan, text, then the result", async () => {
  const { ponder, close } = connect({ address, token });
  try {
    const kinds = await new Promise((resolve, reject) => {
      const seen = [];
      const call = ponder.AskStream({ prompt: "Say hi.", seed: 1, hints: { samples: 1, thinking_tokens: 0 } });
      call.on("data", (event) => seen.push(event.event));
      call.on("error", reject);
      call.on("end", () => resolve(seen));
    });
    assert.strictEqual(kinds[0], "plan");
    assert.strictEqual(kinds[kinds.length - 1], "result");
  } finally {
    close();
  }
});

test("the ask.js example prints the answer", async () => {
  const out = await new Promise((resolve, reject) =>
    execFile(
      process.execPath,
      [path.join(__dirname, "..", "ask.js"), "What is 2 + 2?"],
      { env: { ...process.env, PONDER_ADDRESS: address, PONDER_TOKEN: token }, timeout: 300e3 },
      (err, stdout, stderr) => (err ? reject(new Error(stderr || err.message)) : resolve(stdout)),
    ),
  );
  assert.match(out, /level \w+; cost [0-9.e-]+ credits; request /);
});
