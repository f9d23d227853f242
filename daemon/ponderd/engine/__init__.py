"""The engine seam: turn a prepared prompt and a plan into samples.

The request path talks to an Engine only through these types; LlamaEngine
(llama.cpp, one owner thread) is the real one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence


@dataclass(frozen=True)
class EngineLimits:
    """What the engine can hold: context cells in all, per sequence, sequences at once."""

    n_ctx: int
    n_ctx_seq: int
    n_seq_max: int
    # Tokens Ponder inserts: once after the prompt to open thinking, per sample
    # to close it at the cap (with the wrap-up text), once to skip it when thinking is off.
    forced_open: int = 0
    forced_close: int = 0
    forced_skip: int = 0
    # Tokens a refinement prompt adds around the question and the answer it revises (refine.py).
    refine_overhead: int = 0


THINKING, ANSWER = "thinking", "answer"


@dataclass(frozen=True)
class PreparedPrompt:
    """The chat-templated prompt as tokens, and the tokens that open/close thinking."""

    tokens: tuple[int, ...]
    # Forced after the prompt when thinking is on (empty if the template opens it).
    open_thinking: tuple[int, ...]
    # Forced when the thinking cap is reached (or the model stops while thinking).
    close_thinking: tuple[int, ...]
    # Forced after the prompt when thinking is off but the model would think anyway.
    skip_thinking: tuple[int, ...]
    # Forced after close_thinking at the thinking cap only, and its text (model.wrap_up).
    wrap_up: tuple[int, ...] = ()
    wrap_up_text: str = ""


@dataclass
class GenerationJob:
    prompt: PreparedPrompt
    samples: int
    thinking_cap: int
    answer_cap: int
    seed: int
    # Pure functions from the request path: extract a sample's final answer,
    # and decide from the answers so far whether the vote is settled.
    extract_answer: Callable[[str], str]
    vote_decided: Callable[[Sequence[str], int], bool]
    # Called on the engine thread for every piece of text produced.
    on_text: Callable[[int, str, str], None] | None = None
    # Escalation (stopping.py): start this many samples, and the rest only when
    # `agreed` says their answers do not agree; 0 starts every sample at once.
    first_samples: int = 0
    agreed: Callable[[Sequence[str]], bool] = lambda answers: False
    # Pruning: from the finished samples' confidences, the confidence below which
    # a running sample is stopped (None: not yet); None turns pruning off.
    prune_below: Callable[[Sequence[float]], float | None] | None = None
    # Who asked: waiting jobs are admitted round-robin by tenant (engine/jobs.py).
    tenant: str = ""
    # This job's own sampler settings (None: the model's); temperature 0 samples greedily.
    temperature: float | None = None
    top_p: float | None = None
    # Stop strings: a sample's answer ends before the first of these it writes (engine/sample.py).
    stop: tuple[str, ...] = ()
    cancelled: threading.Event = field(default_factory=threading.Event)
    # Set by the engine when it queues the job, so that cancel() can take a
    # waiting job out of the queue at once instead of when it reaches the head.
    _on_cancel: Callable[[], None] | None = field(default=None, init=False, repr=False, compare=False)

    def cancel(self) -> None:
        """Stop the job: a waiting one leaves the queue and resolves now ("cancelled
        before it started"); a running one stops its samples at the next step."""
        self.cancelled.set()
        hook = self._on_cancel
        if hook is not None:
            hook()


@dataclass
class SampleResult:
    index: int
    thinking: str = ""
    text: str = ""
    answer: str = ""
    thinking_tokens: int = 0
    answer_tokens: int = 0
    forced_tokens: int = 0
    # "stop", "length", "vote_decided", "pruned" (its confidence fell below the
    # finished samples'; it does not vote), "cancelled", "error"
    finish_reason: str = ""
    thinking_capped: bool = False
    # Geometric-mean probability of the least certain window of sampled tokens
    # (engine/confidence.py); 0.0 when the sample produced no token.
    confidence: float = 0.0


@dataclass
class GenerationResult:
    prompt_tokens: int
    # Forced tokens shared by all samples (the opening of the thinking block).
    shared_forced_tokens: int
    samples: list[SampleResult]
    error: str = ""
    # The engine itself stopped while this job ran: `error` says why and the
    # usage so far is reported; the request should be answered UNAVAILABLE.
    fatal: bool = False
    # The job's vote_decided stopped the samples still running (or never started).
    vote_stopped: bool = False
    # Escalation: the first samples agreed, so the rest were never started.
    agreed_early: bool = False

    @property
    def thinking_tokens(self) -> int:
        return sum(s.thinking_tokens for s in self.samples)

    @property
    def answer_tokens(self) -> int:
        return sum(s.answer_tokens for s in self.samples)

    @property
    def forced_tokens(self) -> int:
        return self.shared_forced_tokens + sum(s.forced_tokens for s in self.samples)

    @property
    def samples_run(self) -> int:
        """Samples that produced at least one token."""
        return sum(1 for s in self.samples if s.thinking_tokens or s.answer_tokens)

    @property
    def samples_stopped(self) -> int:
        return sum(1 for s in self.samples if s.finish_reason == "vote_decided")

    @property
    def samples_pruned(self) -> int:
        return sum(1 for s in self.samples if s.finish_reason == "pruned")


class Engine(Protocol):
    @property
    def limits(self) -> EngineLimits:
        """What the model's context holds (known once started)."""

    @property
    def model_name(self) -> str:
        """The model file's name (known once started)."""

    def start(self) -> None:
        """Load the model and start the owner thread."""

    def warm(self) -> None:
        """Run one tiny generation so the first request pays no first-use cost."""

    def prepare(self, system: str, prompt: str, history: Sequence[tuple[str, str]] = ()) -> PreparedPrompt:
        """Render the chat template and tokenize; safe from any thread.

        `history`: earlier turns of a conversation, (role, text) with role "user" or
        "assistant", between the system prompt and the user's `prompt`."""

    async def generate(self, job: GenerationJob) -> GenerationResult:
        """Queue the job on the owner thread; resolves when every sample has finished or stopped.

        Raises Unavailable, with nothing queued or run, when the queue is full,
        the engine is closing or it has stopped; and Unavailable when the engine
        stops before the job was admitted. A job running when it stops resolves
        with `fatal` set and its usage so far."""

    def queue_depth(self) -> int:
        """Jobs waiting or running."""

    def failure(self) -> str:
        """"" while the owner thread is healthy; else why it stopped (it never restarts)."""

    def last_progress(self) -> float:
        """time.monotonic() of the owner thread's latest loop turn; it turns at least every second when idle."""

    def close(self) -> None:
        """Stop the owner thread (after finishing running jobs) and free the model."""
