"""Shared helpers for the benchmarks: a real engine, timing, and plain-text tables."""

from __future__ import annotations

import asyncio
import pathlib
import statistics
import time
from typing import Any, Sequence

from ponderd.answers import extract_answer
from ponderd.engine import GenerationJob
from ponderd.engine.llama import LlamaEngine
from ponderd.request.voting import vote_decided
from ponderd.settings import ModelSettings


def engine(**overrides: Any) -> LlamaEngine:
    e = LlamaEngine(ModelSettings(**overrides), max_queue=256)
    e.start()
    e.warm()
    return e


def job(e: LlamaEngine, prompt: str, samples: int, answer: int, thinking: int = 0, seed: int = 1,
        early_stop: bool = False, system: str = "") -> GenerationJob:
    decided = vote_decided if early_stop else (lambda answers, remaining: False)
    return GenerationJob(e.prepare(system, prompt), samples, thinking, answer, seed, extract_answer, decided)


def run_jobs(e: LlamaEngine, jobs: Sequence[GenerationJob]) -> tuple[list[Any], float]:
    """Submit all jobs at once (they share the engine's batch); return results and wall seconds."""

    async def main() -> list[Any]:
        return await asyncio.gather(*(e.generate(j) for j in jobs))

    start = time.perf_counter()
    results = asyncio.run(main())
    return results, time.perf_counter() - start


def generated(results: Sequence[Any]) -> int:
    return sum(r.thinking_tokens + r.answer_tokens for r in results)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [[str(c) for c in header]] + [[f"{c:.3g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else 0.0


def report(lines: Sequence[str], out: pathlib.Path) -> None:
    """Print a bench's result lines and keep them in `out` (bench/results/...)."""
    text = "\n".join(lines)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
