"""llama.cpp through llama-cpp-python's low-level API, owned by one thread.

The llama context is not thread-safe, so one thread owns it and runs a loop:
admit queued jobs while sequence slots and KV cells allow, decode each new
prompt once for all its samples (every prompt token carries every sample's
sequence id, so the KV cells are shared), then step every running sample of
every job in one batch. Async handlers only enqueue jobs and await futures.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import logging
import os
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..errors import FailedPrecondition, Unavailable
from ..planner import EngineLimits
from ..settings import ModelSettings
from . import GenerationJob, GenerationResult, PreparedPrompt
from .model_file import resolve_model_path
from .sample import SampleState

log = logging.getLogger("ponder.engine")

OPEN_TAG, CLOSE_TAG = "<think>\n", "\n</think>\n\n"


@dataclass
class _Running:
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


class LlamaEngine:
    def __init__(self, settings: ModelSettings, max_queue: int) -> None:
        self.settings = settings
        self.max_queue = max_queue
        self.model_name = ""
        self.limits = EngineLimits(settings.n_ctx, settings.n_ctx, settings.n_seq_max, 0)
        self._cv = threading.Condition()
        self._pending: deque[tuple[GenerationJob, concurrent.futures.Future]] = deque()
        self._running: list[_Running] = []
        self._free_seqs: list[int] = []
        self._free_cells = 0
        self._closing = False
        self._thread: threading.Thread | None = None

    # lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        import llama_cpp as L  # heavy: loaded only when a daemon starts

        self._L = L
        path = resolve_model_path(self.settings.path)
        L.llama_backend_init()
        _route_llama_logs(L)
        mp = L.llama_model_default_params()
        mp.n_gpu_layers = self.settings.n_gpu_layers
        self._model = L.llama_model_load_from_file(str(path).encode(), mp)
        if not self._model:
            raise FailedPrecondition(f"llama.cpp could not load {path}; is it a GGUF model file?")
        self._vocab = L.llama_model_get_vocab(self._model)
        s = self.settings
        cp = L.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_seq_max = s.n_ctx, s.n_batch, s.n_batch, s.n_seq_max
        threads = s.n_threads or os.cpu_count() or 1
        cp.n_threads = cp.n_threads_batch = threads
        # One KV buffer for all sequences: samples share their prompt's cells.
        cp.kv_unified = True
        self._ctx = L.llama_init_from_model(self._model, cp)
        if not self._ctx:
            raise FailedPrecondition(f"llama.cpp could not create a context of {s.n_ctx} tokens; lower model.n_ctx")
        self._mem = L.llama_get_memory(self._ctx)
        self._batch = L.llama_batch_init(s.n_batch, 0, s.n_seq_max)
        self._template = L.llama_model_chat_template(self._model, None)
        self.model_name = path.stem
        self._native = self._detect_native()
        self._open = self.tokenize(OPEN_TAG)
        self._close = self.tokenize(CLOSE_TAG)
        n_ctx = L.llama_n_ctx(self._ctx)
        n_ctx_seq = min(L.llama_n_ctx_seq(self._ctx), L.llama_model_n_ctx_train(self._model))
        probe = self.prepare("", "")
        self.limits = EngineLimits(
            n_ctx, n_ctx_seq, s.n_seq_max, len(probe.open_thinking), len(probe.close_thinking), len(probe.skip_thinking)
        )
        self._free_seqs = list(range(s.n_seq_max))
        self._free_cells = n_ctx
        self._thread = threading.Thread(target=self._loop, name="ponder-engine", daemon=True)
        self._thread.start()
        log.info(
            "model %s loaded: n_ctx=%d, %d sequences, %d threads, thinking=%s",
            self.model_name, n_ctx, s.n_seq_max, threads, "native" if self._native else "prompted",
        )

    def warm(self) -> None:
        prompt = self.prepare("", "Hi")
        job = GenerationJob(prompt, 1, 0, 2, 1, lambda t: t, lambda a, r: False)
        future = self._submit(job)
        future.result(timeout=120)

    def close(self) -> None:
        with self._cv:
            self._closing = True
            for job, _ in self._pending:
                job.cancel()
            for run in self._running:
                run.job.cancel()
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join()
        L = getattr(self, "_L", None)
        if L is not None and getattr(self, "_ctx", None):
            L.llama_batch_free(self._batch)
            L.llama_free(self._ctx)
            L.llama_model_free(self._model)
            self._ctx = None

    # any thread ----------------------------------------------------------------

    def tokenize(self, text: str, special: bool = True) -> tuple[int, ...]:
        data = text.encode()
        n = len(data) + 16
        buf = (self._L.llama_token * n)()
        got = self._L.llama_tokenize(self._vocab, data, len(data), buf, n, False, special)
        if got < 0:
            buf = (self._L.llama_token * -got)()
            got = self._L.llama_tokenize(self._vocab, data, len(data), buf, -got, False, special)
        return tuple(buf[:got])

    def prepare(self, system: str, prompt: str) -> PreparedPrompt:
        text = self._render(system or self.settings.system_prompt, prompt)
        opened = text.rstrip().endswith("<think>")
        if self._native:
            open_ = () if opened else self._open
            skip = self.tokenize(("" if opened else OPEN_TAG) + CLOSE_TAG)
        else:
            open_, skip = self._open, ()
        return PreparedPrompt(self.tokenize(text), open_, self._close, skip)

    async def generate(self, job: GenerationJob) -> GenerationResult:
        return await asyncio.wrap_future(self._submit(job))

    def queue_depth(self) -> int:
        with self._cv:
            return len(self._pending) + len(self._running)

    def _submit(self, job: GenerationJob) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._cv:
            if self._closing:
                raise Unavailable("the daemon is shutting down; retry on another instance")
            if len(self._pending) >= self.max_queue:
                raise Unavailable(f"{len(self._pending)} requests are already waiting for the model; retry shortly")
            self._pending.append((job, future))
            self._cv.notify()
        return future

    def _render(self, system: str, prompt: str) -> str:
        L = self._L
        msgs = (L.llama_chat_message * 2)()
        msgs[0].role, msgs[0].content = b"system", system.encode()
        msgs[1].role, msgs[1].content = b"user", prompt.encode()
        size = 2 * (len(msgs[0].content) + len(msgs[1].content)) + 512
        buf = ctypes.create_string_buffer(size)
        n = L.llama_chat_apply_template(self._template, msgs, 2, True, buf, size)
        if n < 0:
            # No template llama.cpp recognises: fall back to ChatML.
            return f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
        if n > size:
            buf = ctypes.create_string_buffer(n)
            n = L.llama_chat_apply_template(self._template, msgs, 2, True, buf, n)
        return buf.raw[:n].decode("utf-8", errors="replace")

    def _detect_native(self) -> bool:
        if self.settings.thinking != "auto":
            return self.settings.thinking == "native"
        # A reasoning model has <think> and </think> as single tokens of its own.
        return len(self.tokenize("<think>")) == 1 and len(self.tokenize("</think>")) == 1

    # owner thread --------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._running and not self._closing:
                    self._cv.wait()
                if self._closing and not self._pending and not self._running:
                    return
                admitted = self._take_admissible()
            for job, future, seqs in admitted:
                self._start_job(job, future, seqs)
            if self._running:
                self._step()

    def _take_admissible(self) -> list[tuple[GenerationJob, concurrent.futures.Future, list[int]]]:
        out = []
        while self._pending:
            job, future = self._pending[0]
            need = self._cells_needed(job)
            if job.cancelled.is_set():
                self._pending.popleft()
                future.set_result(GenerationResult(len(job.prompt.tokens), 0, [], "cancelled before it started"))
                continue
            if job.samples > self.limits.n_seq_max or need > self.limits.n_ctx:
                self._pending.popleft()
                future.set_exception(FailedPrecondition("the plan does not fit the model's context"))
                continue
            # First come, first served: a big job at the head waits rather than starve.
            if job.samples > len(self._free_seqs) or need > self._free_cells:
                break
            self._pending.popleft()
            self._free_cells -= need
            out.append((job, future, [self._free_seqs.pop() for _ in range(job.samples)]))
        return out

    def _cells_needed(self, job: GenerationJob) -> int:
        p = job.prompt
        prefix = len(p.open_thinking) if job.thinking_cap else len(p.skip_thinking)
        per_sample = job.thinking_cap + job.answer_cap + (len(p.close_thinking) if job.thinking_cap else 0)
        return len(p.tokens) + prefix + job.samples * per_sample

    def _start_job(self, job: GenerationJob, future: concurrent.futures.Future, seqs: list[int]) -> None:
        p = job.prompt
        prefix = p.open_thinking if job.thinking_cap else p.skip_thinking
        tokens = list(p.tokens) + list(prefix)
        run = _Running(
            job, future, seqs,
            [SampleState(i, job.thinking_cap, job.answer_cap, p.close_thinking, job.on_text) for i in range(job.samples)],
            [self._sampler(job.seed + i) for i in range(job.samples)],
            [len(tokens)] * job.samples,
            self._cells_needed(job),
            len(prefix),
        )
        self._running.append(run)
        try:
            self._decode_prompt(tokens, seqs)
            last = self._batch.n_tokens - 1
            for i, state in enumerate(run.states):
                # A sample that ends at once can settle the vote and stop the rest.
                if not state.done:
                    self._accept(run, i, self._L.llama_sampler_sample(run.samplers[i], self._ctx, last))
        except Exception as exc:  # one bad job must not stop the loop
            log.exception("prompt decode failed")
            self._fail(run, exc)
        self._finish_if_done(run)

    def _decode_prompt(self, tokens: list[int], seqs: list[int]) -> None:
        b, L, n_batch = self._batch, self._L, self.settings.n_batch
        for start in range(0, len(tokens), n_batch):
            chunk = tokens[start : start + n_batch]
            b.n_tokens = len(chunk)
            for k, tok in enumerate(chunk):
                b.token[k], b.pos[k], b.n_seq_id[k] = tok, start + k, len(seqs)
                for j, s in enumerate(seqs):
                    b.seq_id[k][j] = s
                b.logits[k] = start + k == len(tokens) - 1
            rc = L.llama_decode(self._ctx, b)
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc} on the prompt")

    def _step(self) -> None:
        b, L = self._batch, self._L
        b.n_tokens = 0
        outputs: list[tuple[_Running, int, int]] = []
        for run in self._running:
            if run.job.cancelled.is_set():
                for st in run.states:
                    st.stop("cancelled")
                continue
            for i, st in enumerate(run.states):
                if st.done or not st.feed:
                    continue
                for k, tok in enumerate(st.feed):
                    n = b.n_tokens
                    b.token[n], b.pos[n], b.n_seq_id[n] = tok, run.pos[i] + k, 1
                    b.seq_id[n][0] = run.seqs[i]
                    b.logits[n] = k == len(st.feed) - 1
                    b.n_tokens = n + 1
                run.pos[i] += len(st.feed)
                outputs.append((run, i, b.n_tokens - 1))
        if b.n_tokens:
            rc = L.llama_decode(self._ctx, b)
            if rc != 0:
                log.error("llama_decode returned %d; failing %d running jobs", rc, len(self._running))
                for run in list(self._running):
                    self._fail(run, RuntimeError(f"llama_decode returned {rc}"))
            else:
                for run, i, idx in outputs:
                    if not run.states[i].done:
                        self._accept(run, i, L.llama_sampler_sample(run.samplers[i], self._ctx, idx))
        for run in list(self._running):
            self._finish_if_done(run)

    def _accept(self, run: _Running, i: int, token: int) -> None:
        st = run.states[i]
        st.accept(token, self._piece(token), bool(self._L.llama_vocab_is_eog(self._vocab, token)))
        if not st.done:
            return
        st.result.answer = run.job.extract_answer(st.result.text)
        run.answers.append(st.result.answer)
        remaining = sum(1 for s in run.states if not s.done)
        if remaining and run.job.vote_decided(run.answers, remaining):
            for other in run.states:
                other.stop("vote_decided")

    def _piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self._L.llama_token_to_piece(self._vocab, token, buf, 64, 0, True)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._L.llama_token_to_piece(self._vocab, token, buf, -n, 0, True)
        return buf.raw[:n]

    def _sampler(self, seed: int) -> Any:
        L, s = self._L, self.settings
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(s.top_k))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(s.top_p, 1))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(s.temperature))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

    def _fail(self, run: _Running, exc: Exception) -> None:
        for st in run.states:
            st.stop("error")
        run.error = str(exc)

    def _finish_if_done(self, run: _Running) -> None:
        if not all(st.done for st in run.states):
            return
        L = self._L
        for seq in run.seqs:
            L.llama_memory_seq_rm(self._mem, seq, -1, -1)
        for chain in run.samplers:
            L.llama_sampler_free(chain)
        self._running.remove(run)
        with self._cv:
            self._free_seqs.extend(run.seqs)
            self._free_cells += run.cells
        result = GenerationResult(
            prompt_tokens=len(run.job.prompt.tokens),
            shared_forced_tokens=run.shared_forced,
            samples=[st.result for st in run.states],
            error=run.error,
        )
        run.future.set_result(result)


def _llama_log(level: int, text: bytes, user_data: Any) -> None:
    if log.isEnabledFor(logging.DEBUG):
        log.debug("llama.cpp: %s", text.decode(errors="replace").rstrip())


# llama.cpp keeps one log callback for the whole process and may call it from
# any context until exit, so the ctypes wrapper must outlive every engine: it
# is the one piece of module state here, set once.
_LOG_CALLBACK: list[Any] = []


def _route_llama_logs(L: Any) -> None:
    if not _LOG_CALLBACK:
        _LOG_CALLBACK.append(L.llama_log_callback(_llama_log))
        L.llama_log_set(_LOG_CALLBACK[0], None)
