"""What the HTTP API adds over gRPC: latency of one small ask, and streaming throughput at 32 clients each side.

    python bench/http_overhead.py [--asks 60] [--clients 32] [--streams 2] [--out bench/results/http_overhead.txt]

One real daemon (`ponder serve`, a subprocess: the embedded model, the small
test policy) serves both transports; the clients run in this process. Latency: the same 1-sample ask (level `direct`, the same seed, a
4-token answer cap), gRPC and HTTP alternating one after the other, each over
a kept-open connection (a grpc channel; a keep-alive http.client connection
with a plain JSON body; the `openai` SDK too), so drift on a shared machine
hits both alike; reported as median and p99 per transport and the difference.
Throughput: `--clients` concurrent streaming asks (grpc.aio AskStream vs the
async `openai` SDK with stream=True), each client asking `--streams` times in
turn, gRPC and HTTP runs alternating twice; requests per second each side and
the ratio HTTP / gRPC.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import pathlib
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import grpc  # noqa: E402
import openai  # noqa: E402

from conftest import DaemonProcess  # noqa: E402
from ponder.v1 import ponder_pb2, ponder_pb2_grpc  # noqa: E402

PROMPT = "Name a colour."


@dataclass
class Daemon:
    address: str  # gRPC HOST:PORT
    http: str  # http://HOST:PORT
    state_dir: pathlib.Path

    @property
    def port(self) -> int:
        return int(self.http.rsplit(":", 1)[1])

    def token(self, name: str) -> str:
        return (self.state_dir / f"{name}.token").read_text().strip()


def p99(xs: list[float]) -> float:
    return sorted(xs)[min(len(xs) - 1, round(0.99 * (len(xs) - 1)))]


def latency(d: Daemon, asks: int) -> list[str]:
    token = d.token("local")
    metadata = (("authorization", f"Bearer {token}"),)
    request = ponder_pb2.AskRequest(
        messages=[ponder_pb2.ChatMessage(role="user", content=PROMPT)], seed=7,
        hints=ponder_pb2.Hints(level="direct", answer_tokens=4),
    )
    body = json.dumps({
        "model": "default", "messages": [{"role": "user", "content": PROMPT}], "seed": 7, "max_tokens": 4,
        "ponder": {"level": "direct"},
    })
    headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}
    sdk = openai.OpenAI(base_url=f"{d.http}/v1", api_key=token, max_retries=0, timeout=120)
    times: dict[str, list[float]] = {"grpc": [], "http": [], "http (openai SDK)": []}
    texts = set()
    with grpc.insecure_channel(d.address) as channel:
        stub = ponder_pb2_grpc.PonderServiceStub(channel)
        conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=120)
        for i in range(asks + 3):  # the first 3 of each warm up
            t = time.perf_counter()
            g = stub.Ask(request, metadata=metadata, timeout=120)
            tg = time.perf_counter() - t
            t = time.perf_counter()
            conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
            h = json.loads(conn.getresponse().read())
            th = time.perf_counter() - t
            t = time.perf_counter()
            s = sdk.chat.completions.create(
                model="default", messages=[{"role": "user", "content": PROMPT}], seed=7, max_tokens=4,
                extra_body={"ponder": {"level": "direct"}},
            )
            ts = time.perf_counter() - t
            texts |= {g.text, h["choices"][0]["message"]["content"], s.choices[0].message.content}
            if i >= 3:
                times["grpc"].append(tg)
                times["http"].append(th)
                times["http (openai SDK)"].append(ts)
        conn.close()
    out = [f"latency of one ask ({asks} each, alternating; same seed, same answer: {len(texts) == 1})",
           f"{'transport':<20} {'median ms':>10} {'p99 ms':>10}"]
    for name, xs in times.items():
        out.append(f"{name:<20} {statistics.median(xs) * 1e3:>10.2f} {p99(xs) * 1e3:>10.2f}")
    for name in ("http", "http (openai SDK)"):
        diffs = [b - a for a, b in zip(times["grpc"], times[name])]
        g, h = times["grpc"], times[name]
        out.append(f"added by {name}: median {(statistics.median(h) - statistics.median(g)) * 1e3:+.2f} ms, "
                   f"p99 {(p99(h) - p99(g)) * 1e3:+.2f} ms (difference of the percentiles); "
                   f"paired per ask: median {statistics.median(diffs) * 1e3:+.2f} ms, p99 {p99(diffs) * 1e3:+.2f} ms")
    return out


async def grpc_streams(d: Daemon, clients: int, streams: int) -> float:
    metadata = (("authorization", f"Bearer {d.token('local')}"),)
    async with grpc.aio.insecure_channel(d.address) as channel:
        stub = ponder_pb2_grpc.PonderServiceStub(channel)

        async def one(k: int) -> None:
            for j in range(streams):
                request = ponder_pb2.AskStreamRequest(
                    messages=[ponder_pb2.ChatMessage(role="user", content=PROMPT)], seed=100 + k * streams + j,
                    hints=ponder_pb2.Hints(level="direct"),
                )
                async for _ in stub.AskStream(request, metadata=metadata, timeout=600):
                    pass

        t = time.perf_counter()
        await asyncio.gather(*(one(k) for k in range(clients)))
        return clients * streams / (time.perf_counter() - t)


async def http_streams(d: Daemon, clients: int, streams: int) -> float:
    async with openai.AsyncOpenAI(base_url=f"{d.http}/v1", api_key=d.token("local"), max_retries=0,
                                  timeout=600) as c:
        async def one(k: int) -> None:
            for j in range(streams):
                stream = await c.chat.completions.create(
                    model="default", messages=[{"role": "user", "content": PROMPT}], seed=100 + k * streams + j,
                    stream=True, extra_body={"ponder": {"level": "direct"}},
                )
                async for _ in stream:
                    pass

        t = time.perf_counter()
        await asyncio.gather(*(one(k) for k in range(clients)))
        return clients * streams / (time.perf_counter() - t)


async def raw_http_streams(d: Daemon, clients: int, streams: int) -> float:
    """The same streams over plain asyncio sockets (HTTP/1.1, keep-alive): the server's share without the SDK's."""
    token = d.token("local")

    async def one(k: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", d.port)
        for j in range(streams):
            body = json.dumps({
                "model": "default", "messages": [{"role": "user", "content": PROMPT}], "seed": 100 + k * streams + j,
                "stream": True, "ponder": {"level": "direct"},
            }).encode()
            writer.write(
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                + f"authorization: Bearer {token}\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body
            )
            while b"data: [DONE]" not in await reader.readline():
                pass
            while await reader.readline() != b"0\r\n":  # the chunked body's last chunk
                pass
            await reader.readline()
        writer.close()

    t = time.perf_counter()
    await asyncio.gather(*(one(k) for k in range(clients)))
    return clients * streams / (time.perf_counter() - t)


def throughput(d: Daemon, clients: int, streams: int) -> list[str]:
    sides = {"grpc": grpc_streams, "http (openai SDK)": http_streams, "http (raw sockets)": raw_http_streams}
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(2):
        for name, run in sides.items():
            rates[name].append(asyncio.run(run(d, clients, streams)))
    g = statistics.mean(rates["grpc"])
    out = [f"streaming throughput, {clients} concurrent clients x {streams} asks each side (2 runs each, alternating)"]
    for name, xs in rates.items():
        m = statistics.mean(xs)
        out.append(f"{name:<20} {m:6.2f} asks/s ({', '.join(f'{r:.2f}' for r in xs)}); ratio to grpc {m / g:.3f}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--asks", type=int, default=60)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--out", type=pathlib.Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PONDER_")}
        env.update(PONDER_STATE_DIR=f"{tmp}/state", PONDER_METRICS_LISTEN="")
        proc = DaemonProcess(env, "--http-listen", "127.0.0.1:0")
        try:
            address = proc.wait_ready(300).splitlines()[0]
            found = re.search(r"listening on .*?(http://[\d.]+:\d+)", proc.log.read_text())
            assert found, proc.log.read_text()
            d = Daemon(address, found.group(1), proc.state_dir)
            lines = [f"$ python bench/http_overhead.py --asks {args.asks} --clients {args.clients} --streams {args.streams}"]
            lines += latency(d, args.asks) + [""] + throughput(d, args.clients, args.streams)
        finally:
            proc.stop()
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
