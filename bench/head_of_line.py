"""Head-of-line: a running request's time to next token while a long prompt arrives,
with chunked prefill (model.prefill_chunk) and without (0), side by side in one run.

    python bench/head_of_line.py [--prompt-tokens 2000] [--chunk 256] [--json bench/head_of_line.json]

A runs one sample (thinking to a long cap); once it is generating, B arrives with
a long prompt. The figure is the longest gap between A's consecutive tokens
while B is prefilled, and A's median gap outside it, per setting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import statistics
import sys
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from ponderd.answers import extract_answer
from ponderd.engine import GenerationJob
from ponderd.engine.llama import LlamaEngine
from ponderd.settings import ModelSettings


def measure(chunk: int, prompt_tokens: int) -> dict[str, float]:
    e = LlamaEngine(ModelSettings(n_ctx=max(4096, prompt_tokens + 1024), n_seq_max=2, prefill_chunk=chunk), max_queue=4)
    e.start()
    e.warm()
    stamps: list[float] = []
    b_first: list[float] = []
    started = threading.Event()

    def a_text(sample, phase, text):
        stamps.append(time.perf_counter())
        if len(stamps) >= 8:
            started.set()

    def b_text(sample, phase, text):
        if not b_first:
            b_first.append(time.perf_counter())

    filler = "the quick brown fox jumps over the lazy dog. "
    long_prompt = "Summarise: " + filler * (prompt_tokens // 10)
    never = lambda answers, remaining: False
    a = GenerationJob(e.prepare("", "Think about the sea."), 1, 400, 400, 1, extract_answer, never, a_text)
    b = GenerationJob(e.prepare("", long_prompt), 1, 0, 2, 1, extract_answer, never, b_text)

    async def main():
        running = asyncio.ensure_future(e.generate(a))
        await asyncio.to_thread(started.wait, 300)
        arrived = time.perf_counter()
        await e.generate(b)
        a.cancel()
        await running
        return arrived

    arrived = asyncio.run(main())
    e.close()
    gaps = [(t1 - t0, t1) for t0, t1 in zip(stamps, stamps[1:])]
    during = [g for g, t in gaps if arrived <= t <= b_first[0] + 0.5]
    outside = [g for g, t in gaps if t < arrived]
    return {
        "prompt_tokens": len(b.prompt.tokens),
        "longest_gap_s": max(during) if during else 0.0,
        "median_gap_s": statistics.median(outside),
        "b_time_to_first_token_s": b_first[0] - arrived,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompt-tokens", type=int, default=2000)
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--json", type=pathlib.Path, default=None)
    args = ap.parse_args()
    whole = measure(0, args.prompt_tokens)
    chunked = measure(args.chunk, args.prompt_tokens)
    print(f"B's prompt: {whole['prompt_tokens']} tokens; A's median gap between tokens {whole['median_gap_s']*1000:.0f} ms")
    print(f"{'prefill':>10} {'A longest gap':>14} {'x median':>9} {'B first token':>14}")
    for name, r in (("whole", whole), (f"chunk {args.chunk}", chunked)):
        print(f"{name:>10} {r['longest_gap_s']:13.2f}s {r['longest_gap_s'] / r['median_gap_s']:9.1f} {r['b_time_to_first_token_s']:13.2f}s")
    print(f"chunked / whole, A's longest gap: {chunked['longest_gap_s'] / whole['longest_gap_s']:.2f}; "
          f"B's first token: {chunked['b_time_to_first_token_s'] / whole['b_time_to_first_token_s']:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"whole": whole, "chunked": chunked, "chunk": args.chunk}, indent=2))


if __name__ == "__main__":
    main()
