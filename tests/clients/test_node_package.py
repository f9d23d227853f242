"""The Node.js client is a real npm package: packed, installed from its tarball into a fresh folder, and used.

`npm pack` runs the package's prepack script (scripts/bundle-protos.js), which copies protos/ into
the package; the tarball is installed with `npm install <tarball> --prefer-offline` (its
dependencies from npm's cache, which `make tools` fills, else from the registry) into an empty
folder, and a script there `require`s it by name and calls a real daemon.
"""

import json
import os
import shutil
import subprocess
import tarfile

import pytest

from conftest import NODE_DIR, REPO, node_or_skip

PROTOS = REPO / "protos" / "ponder" / "v1"

# Run in the folder the tarball was installed into: the package by name, not by path.
SCRIPT = r"""
const { connect, decodeError, PROTOS } = require("ponder-client");
const path = require("node:path");
const sent = [];
// Records each request as it goes on the wire (after the client has added its idempotency key).
const record = (options, next) => new (require("ponder-client").grpc.InterceptingCall)(next(options), {
  sendMessage: (message, nextSend) => { sent.push(message); nextSend(message); },
});
const { ponder, close } = connect({ address: process.env.ADDRESS, token: process.env.TOKEN, interceptors: [record] });
const unary = (method, request) => new Promise((resolve, reject) =>
  ponder[method](request, { deadline: Date.now() + 300e3 }, (err, reply) => (err ? reject(decodeError(err)) : resolve(reply))));
(async () => {
  const hints = { samples: 1, thinking_tokens: 0 };
  const balance = (await unary("GetBalance", {})).balance;
  const first = await unary("Ask", { prompt: "Say yes.", hints });
  const again = await unary("Ask", { prompt: "Say yes.", hints, idempotency_key: "node-run-1" });
  const replay = await unary("Ask", { prompt: "Say yes.", hints, idempotency_key: "node-run-1" });
  close();
  console.log(JSON.stringify({
    protos: path.relative(process.cwd(), PROTOS), tenant: balance.tenant,
    keys: sent.map((m) => m.idempotency_key === undefined ? null : m.idempotency_key),
    first_replayed: first.replayed, again_replayed: again.replayed, replay_replayed: replay.replayed,
    same_request: replay.request_id === again.request_id,
  }));
})().catch((e) => { console.error(JSON.stringify(e)); process.exit(1); });
"""


# TypeScript against the installed package's index.d.ts: the first compiles under --strict, each
# line of the second is a mistake tsc must catch.
TYPED = """
import { connect, decodeError, AskResponse, AskStreamResponse } from "ponder-client";
const { ponder, close } = connect({ address: "127.0.0.1:50051", token: "pnd_x", ca: "ca.pem" });
ponder.Ask({ prompt: "hi", hints: { samples: 1, severity_floor: "SEVERITY_HIGH" } }, { deadline: Date.now() + 1000 },
  (err, reply: AskResponse) => {
    close();
    if (err) { const e = decodeError(err); console.log(e.reason, e.metadata.window_end); return; }
    const cost: number = reply.cost + reply.balance.remaining;
    console.log(cost, reply.plan.level, reply.replayed, reply.request_id);
  });
ponder.AskStream({ prompt: "x" }).on("data", (event: AskStreamResponse) => console.log(event.event, event.delta?.text));
"""
WRONG_TS = """
import { connect } from "ponder-client";
const { ponder } = connect({ adress: "x" });
ponder.Ask({ promt: "hi" }, () => {});
ponder.Ask({ prompt: "hi" }, (err, reply) => { const s: string = reply.cost; console.log(err, s); });
"""


def test_the_bundled_protos_are_the_apis():
    bundled = NODE_DIR / "protos" / "ponder" / "v1"
    assert sorted(p.name for p in bundled.glob("*.proto")) == sorted(p.name for p in PROTOS.glob("*.proto"))
    for proto in PROTOS.glob("*.proto"):
        assert (bundled / proto.name).read_text() == proto.read_text(), f"clients/node/protos/{proto.name} is stale: run `make proto`"
    package = json.loads((NODE_DIR / "package.json").read_text())
    assert not package.get("private") and package["types"] == "index.d.ts"
    assert {"ponder.js", "index.d.ts", "protos/", "google/"} <= set(package["files"])
    assert "../../protos" not in (NODE_DIR / "ponder.js").read_text()


@pytest.mark.model
def test_the_packed_tarball_installs_in_a_fresh_folder_and_calls_the_daemon(shared_daemon, tmp_path):
    node = node_or_skip()
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("needs npm")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PONDER_")}
    packed = subprocess.run([npm, "pack", "--pack-destination", str(tmp_path), "--json"], cwd=NODE_DIR, env=env,
                            capture_output=True, text=True, timeout=300)
    assert packed.returncode == 0, packed.stderr
    tarball = tmp_path / json.loads(packed.stdout)[0]["filename"]
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    assert {"package/protos/ponder/v1/ponder.proto", "package/protos/ponder/v1/admin.proto",
            "package/google/rpc/status.proto", "package/index.d.ts", "package/ponder.js"} <= names
    assert not any("node_modules" in n or n.startswith("package/test/") for n in names)

    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text('{"name": "app", "version": "1.0.0", "private": true}\n')
    installed = subprocess.run(
        [npm, "install", str(tarball), "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=app, env=env, capture_output=True, text=True, timeout=600,
    )
    assert installed.returncode == 0, installed.stderr
    assert (app / "node_modules" / "ponder-client" / "protos" / "ponder" / "v1" / "ponder.proto").is_file()

    tsc = NODE_DIR / "node_modules" / ".bin" / "tsc"
    assert tsc.exists(), "typescript is a devDependency of clients/node: `make tools` installs it"
    (app / "typed.ts").write_text(TYPED)
    (app / "wrong.ts").write_text(WRONG_TS)
    flags = ["--noEmit", "--strict", "--moduleResolution", "node", "--target", "es2020", "--types", "node"]
    typed = subprocess.run([str(tsc), *flags, "typed.ts"], cwd=app, capture_output=True, text=True, timeout=300)
    assert typed.returncode == 0, typed.stdout + typed.stderr
    wrong = subprocess.run([str(tsc), *flags, "wrong.ts"], cwd=app, capture_output=True, text=True, timeout=300)
    errors = [line for line in wrong.stdout.splitlines() if ": error TS" in line]
    assert [e.split("(")[1].split(",")[0] for e in errors] == ["3", "4", "5"], wrong.stdout

    (app / "main.js").write_text(SCRIPT)
    run = subprocess.run([node, "main.js"], cwd=app, capture_output=True, text=True, timeout=600,
                         env=env | {"ADDRESS": shared_daemon.address, "TOKEN": shared_daemon.token()})
    assert run.returncode == 0, run.stdout + run.stderr
    out = json.loads(run.stdout)
    # The protos come from the installed package, not from a repository checkout.
    assert out["protos"] == os.path.join("node_modules", "ponder-client", "protos")
    assert out["tenant"] == "local"
    # GetBalance carries no key; an Ask without one gets a fresh UUID, as the Python client sends.
    assert out["keys"][0] is None and len(out["keys"][1]) == 36 and out["keys"][1].count("-") == 4
    assert out["keys"][2:] == ["node-run-1", "node-run-1"]
    assert out["first_replayed"] is False and out["again_replayed"] is False
    assert out["replay_replayed"] is True and out["same_request"] is True
