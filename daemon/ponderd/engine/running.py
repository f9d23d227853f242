"""One job's samples inside the engine, and the batch rows they put into llama.cpp.

The engine thread (llama.py) schedules; this module holds what it schedules:
a running job's per-sample state, what the job needs of the KV cache, the
result it reports, and how prompt and sample tokens are written into a
llama_batch. Nothing here touches the llama context itself.
"""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass, field
from typing import Any

from ponderd.engine import GenerationJob, GenerationResult
from ponderd.engine.sample import SampleState


@dataclass
class Running:
    job: GenerationJob
    future: concurrent.futures.Future
    seqs: list[int]
    states: list[SampleState]
    samplers: list[Any]
    pos: list[int]
    cells: int
    shared_forced: int
    answers: list[str] = field(default_factory=list)
    error: str = ""
    # Escalation: samples not started yet. Their sequences hold the prompt but
    # its last token, which they decode themselves when started (its logits are gone by then).
    waiting: list[int] = field(default_factory=list)
    last_token: int = 0
    # Confidences of the samples that finished and vote, and the pruning bar they set.
    confidences: list[float] = field(default_factory=list)
    prune_at: float | None = None
    vote_stopped: bool = False
    agreed_early: bool = False
    # Chunked prefill: the prompt (and forced prefix) to decode, and how much of it is decoded.
    prompt: list[int] = field(default_factory=list)
    prefilled: int = 0

    @property
    def prefilling(self) -> bool:
        return self.prefilled < len(self.prompt)

    def after_finish(self) -> None:
        """A sample finished or was pruned: stop the rest if the vote is decided; escalate if due."""
        job = self.job
        # Samples not started yet could still vote: they count as remaining.
        remaining = sum(1 for s in self.states if not s.done)
        if remaining and job.vote_decided(self.answers, remaining):
            self.vote_stopped = True
            for other in self.states:
                other.stop("vote_decided")
            return
        started = [st for i, st in enumerate(self.states) if i not in self.waiting]
        if not self.waiting or not all(st.done for st in started):
            return
        if job.agreed(self.answers):
            self.agreed_early = True
            for i in self.waiting:
                self.states[i].stop("not_run")
            return
        # They disagree: draw the rest, each from the prompt's last token.
        for i in self.waiting:
            self.states[i].feed = [self.last_token]
            self.pos[i] -= 1
        self.waiting = []

    def fail(self, why: str) -> None:
        # Stopping flushes held text to on_text; a sink that raises again is dropped by SampleState.
        for st in self.states:
            st.stop("error")
        self.error = self.error or why


def first_samples(job: GenerationJob) -> int:
    """How many samples start at once: all, or first_samples when escalating."""
    return job.first_samples if 0 < job.first_samples < job.samples else job.samples


def cells_needed(job: GenerationJob) -> int:
    """KV cells the job can use at most: its prompt once (shared by its samples), then each sample's caps."""
    p = job.prompt
    prefix = len(p.open_thinking) if job.thinking_cap else len(p.skip_thinking)
    forced = len(p.close_thinking) + len(p.wrap_up) if job.thinking_cap else 0
    per_sample = job.thinking_cap + job.answer_cap + forced
    # A sample started later decodes the prompt's last token again, in a cell of its own.
    later = job.samples - first_samples(job)
    return len(p.tokens) + prefix + job.samples * per_sample + later


def result(run: Running, fatal: bool = False) -> GenerationResult:
    return GenerationResult(
        prompt_tokens=len(run.job.prompt.tokens),
        shared_forced_tokens=run.shared_forced,
        # Samples never started used nothing and are not reported.
        samples=[st.result for i, st in enumerate(run.states) if i not in run.waiting],
        error=run.error,
        fatal=fatal,
        vote_stopped=run.vote_stopped,
        agreed_early=run.agreed_early,
    )


def put_prompt(b: Any, tokens: list[int], seqs: list[int], begin: int, end: int) -> int | None:
    """Append tokens[begin:end] to batch b, each in every sequence of seqs (the samples share
    the prompt's cells); only the prompt's last token asks for logits. Returns its batch index
    when it is in this range, else None."""
    last = None
    for k in range(begin, end):
        n = b.n_tokens
        b.token[n], b.pos[n], b.n_seq_id[n] = tokens[k], k, len(seqs)
        for j, s in enumerate(seqs):
            b.seq_id[n][j] = s
        b.logits[n] = k == len(tokens) - 1
        if k == len(tokens) - 1:
            last = n
        b.n_tokens = n + 1
    return last


def put_feed(b: Any, feed: list[int], pos: int, seq: int) -> int:
    """Append one sample's next tokens (one sampled, or a forced run such as a closing marker)
    at positions pos...; logits for the last only. Returns its batch index."""
    for k, tok in enumerate(feed):
        n = b.n_tokens
        b.token[n], b.pos[n], b.n_seq_id[n] = tok, pos + k, 1
        b.seq_id[n][0] = seq
        b.logits[n] = k == len(feed) - 1
        b.n_tokens = n + 1
    return b.n_tokens - 1
