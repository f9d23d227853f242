"""llama.cpp through llama-cpp-python's low-level API, owned by one thread.

The llama context is not thread-safe, so one thread owns it and runs a loop:
admit queued jobs while sequence slots and KV cells allow, decode each new
prompt once for all its samples (every prompt token carries every sample's
sequence id, so the KV cells are shared), then step every running sample of
every job in one batch. Async handlers only enqueue jobs and await futures.

The loop is supervised: a job's failing callback fails that job only, and if
the loop itself dies, every waiting and running job is resolved, new jobs are
refused, and failure()/last_progress() tell health checks so.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from typing import Sequence

import numpy as np

from ponderd.engine import EngineLimits, GenerationJob, GenerationResult, PreparedPrompt, framing, native
from ponderd.engine.confidence import token_logprob
from ponderd.engine.jobs import JobQueue, cancelled_before_start, reject, resolve, stopped_message
from ponderd.engine.markers import DEFAULT as DEFAULT_MARKERS
from ponderd.engine.markers import think_markers
from ponderd.engine.model_file import resolve_model_path
from ponderd.engine.running import Running, cells_needed, first_samples, put_feed, put_prompt, result
from ponderd.engine.sample import SampleState
from ponderd.engine.view import VIEW_SYSTEM, LayerView
from ponderd.errors import FailedPrecondition, Unavailable
from ponderd.settings import ModelSettings

log = logging.getLogger("ponder.engine")

OPEN_TAG, CLOSE_TAG = "<think>\n", "\n</think>\n\n"
# Views kept (engine `view`): the same prompt viewed again (a quote, then its ask) decodes nothing.
VIEW_KEPT = 8
# How long the loop holds its next step, after a view whose generation is to follow (an ask),
# for that job to arrive, else it waits a whole step: its plan and reservation take tens of ms
# on a loaded two-core host (60 ms against 20 cut the embedded asks' added p90 from 86 to 58 ms,
# bench/risk_view_latency.py). A hold ends as soon as a job or a view is queued.
LINGER_S = 0.06


class LlamaEngine:
    def __init__(self, settings: ModelSettings, max_queue: int) -> None:
        self.settings = settings
        self.max_queue = max_queue
        self.model_name = ""
        self.limits = EngineLimits(settings.n_ctx, settings.n_ctx, settings.n_seq_max, 0)
        self._queue = JobQueue(max_queue)
        # One lock for the queue and the slots below; the step loop itself takes none.
        self._cv = self._queue.cv
        self._running: list[Running] = []
        # Admitted, marked running, not yet decoding: supervision must resolve these too.
        self._admitted: list[tuple[GenerationJob, concurrent.futures.Future, list[int]]] = []
        self._free_seqs: list[int] = []
        self._free_cells = 0
        self._progress = time.monotonic()
        self._thread: threading.Thread | None = None
        # View jobs (the risk classifier's second view, engine/view.py): prompts decoded by the
        # owner thread ahead of new prompts' prefill, in a context of their own on the same weights.
        self._embeds: deque[tuple[tuple[int, ...], int, int, bool, concurrent.futures.Future]] = deque()
        self._viewer: LayerView | None = None
        self._view_opening: list[int] = []
        self._kept: OrderedDict[tuple[tuple[int, ...], int, int], np.ndarray] = OrderedDict()
        self._prefix: list[int] = []
        self.embedded = 0  # views answered
        self.views_decoded = 0  # of those, views decoded (not kept from an earlier one)
        self.lingered = 0.0
        self.markers = DEFAULT_MARKERS
        self.template_text = ""

    # lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        import llama_cpp as L  # heavy: loaded only when a daemon starts

        self._L = L
        path = resolve_model_path(self.settings.path)
        L.llama_backend_init()
        native.route_llama_logs(L)
        mp = L.llama_model_default_params()
        mp.n_gpu_layers = self.settings.n_gpu_layers
        self._model = L.llama_model_load_from_file(str(path).encode(), mp)
        if not self._model:
            raise FailedPrecondition(f"llama.cpp could not load {path}; is it a GGUF model file?")
        self._vocab = L.llama_model_get_vocab(self._model)
        self._n_vocab = L.llama_vocab_n_tokens(self._vocab)
        self._template = L.llama_model_chat_template(self._model, None)
        s = self.settings
        cp = L.llama_context_default_params()
        # The prefix cache's tokens, known before the context exists (the tokenizer is the model's).
        prefix = self._shared_prefix(s.system_prompt) if s.prefix_cache else []
        # One more sequence and its cells hold the prefix: the samples' capacity is as configured.
        reserved = len(prefix)
        cp.n_ctx, cp.n_batch, cp.n_ubatch = s.n_ctx + reserved, s.n_batch, s.n_batch
        cp.n_seq_max = s.n_seq_max + (1 if prefix else 0)
        threads = self._threads = s.n_threads or os.cpu_count() or 1
        cp.n_threads = cp.n_threads_batch = threads
        # One KV buffer for all sequences: samples share their prompt's cells.
        cp.kv_unified = True
        self._ctx = L.llama_init_from_model(self._model, cp)
        if not self._ctx:
            raise FailedPrecondition(f"llama.cpp could not create a context of {s.n_ctx} tokens; lower model.n_ctx")
        self._mem = L.llama_get_memory(self._ctx)
        self._batch = L.llama_batch_init(s.n_batch, 0, cp.n_seq_max)
        self.model_name = path.stem
        raw = self._template or b""
        self.template_text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
        # The template's own thinking markers where it names them; else <think>/</think>.
        self.markers = think_markers(self.template_text) or DEFAULT_MARKERS
        self._open_text = OPEN_TAG.replace("<think>", self.markers[0])
        self._close_text = CLOSE_TAG.replace("</think>", self.markers[1])
        self._native = self._detect_native()
        self._open = self.tokenize(self._open_text)
        self._close = self.tokenize(self._close_text)
        # Settings text, not markup: tokenised as plain text so it cannot force special tokens.
        self._wrap = self.tokenize(s.wrap_up, special=False) if s.wrap_up else ()
        # The prefix's cells are its own, not the samples': the samples get the configured n_ctx.
        n_ctx = L.llama_n_ctx(self._ctx) - reserved
        n_ctx_seq = min(L.llama_n_ctx_seq(self._ctx) - reserved, L.llama_model_n_ctx_train(self._model))
        # llama.cpp pads the context: keep the samples' capacity at what was configured
        n_ctx, n_ctx_seq = min(n_ctx, s.n_ctx), min(n_ctx_seq, s.n_ctx)
        probe = self.prepare("", "")
        self.limits = EngineLimits(
            n_ctx, n_ctx_seq, s.n_seq_max, len(probe.open_thinking),
            # The worst case per sample: capped, so closed and wrapped up.
            len(probe.close_thinking) + len(probe.wrap_up), len(probe.skip_thinking),
            refine_overhead=framing.overhead(lambda text: len(self.prepare("", text).tokens)),
        )
        self._free_seqs = list(range(s.n_seq_max))
        self._free_cells = n_ctx
        # The views' context is made on the first view (a daemon may never ask for one).
        self._view_opening = self._shared_prefix(VIEW_SYSTEM)
        if prefix:
            # Sequence n_seq_max holds it for good; jobs copy its cells (shared, not duplicated).
            self._decode_prompt(prefix, [s.n_seq_max], logits=False)
            self._prefix = prefix
        self._thread = threading.Thread(target=self._supervised, name="ponder-engine", daemon=True)
        self._thread.start()
        log.info(
            "model %s loaded: n_ctx=%d, %d sequences, %d threads, thinking=%s, prefix cache %d tokens",
            self.model_name, n_ctx, s.n_seq_max, threads, "native" if self._native else "prompted", len(self._prefix),
        )

    def warm(self) -> None:
        prompt = self.prepare("", "Hi")
        job = GenerationJob(prompt, 1, 0, 2, 1, lambda t: t, lambda a, r: False)
        future = self._submit(job)
        future.result(timeout=120)

    def close(self) -> None:
        with self._cv:
            waiting = self._queue.close()
            for run in self._running:
                run.job.cancel()
            embeds = self._take_embeds()
        # Never ran: refused like a job that came too late.
        for job, future in waiting:
            job.cancelled.set()
            reject(future, Unavailable("the daemon is shutting down; retry on another instance"))
        for *_view, future in embeds:
            reject(future, Unavailable("the daemon is shutting down; retry on another instance"))
        if self._thread is not None:
            self._thread.join()
        L = getattr(self, "_L", None)
        if L is not None and getattr(self, "_ctx", None):
            if self._viewer is not None:
                self._viewer.close()
            L.llama_batch_free(self._batch)
            L.llama_free(self._ctx)
            L.llama_model_free(self._model)
            self._ctx = None

    # any thread ----------------------------------------------------------------

    def tokenize(self, text: str, special: bool = True, add_special: bool = False) -> tuple[int, ...]:
        return native.tokenize(self._L, self._vocab, text, special, add_special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return native.detokenize(self._L, self._vocab, tokens)

    def view(self, tokens: Sequence[int], first: int, end: int, linger: bool = False) -> concurrent.futures.Future:
        """The risk classifier's second view of the prompt `tokens` (engine/view.py), float32:
        layer VIEW_LAYER's output over tokens[first:end], RMS-normalised.

        The owner thread decodes the prompt (past the view prompts' shared
        opening) up to that layer, in a context of its own on the served
        weights, between decode steps and ahead of new prompts' prefill, so
        it never competes with generation for the cores nor waits behind a
        long prompt (prefill is chunked). The vector is kept: the same prompt
        viewed again decodes nothing. `linger`: a generation for this prompt
        is to follow (an ask), so the loop holds its next decode step up to
        LINGER_S for it rather than make it wait a whole step. Cancelling the
        future while it waits removes it: nothing of it runs.
        """
        tokens = tuple(tokens)
        if not 0 <= first < end <= len(tokens):
            raise ValueError(f"a view's span [{first}, {end}) is not within its {len(tokens)} tokens")
        if len(tokens) - min(native.common_prefix(self._view_opening, tokens), first) > native.VIEW_CONTEXT:
            raise ValueError(f"a view decodes at most {native.VIEW_CONTEXT} tokens past the prefix cache")
        future: concurrent.futures.Future = concurrent.futures.Future()
        item = (tokens, first, end, linger, future)
        with self._cv:
            if self._queue.failure:
                raise Unavailable(stopped_message(self._queue.failure))
            if self._queue.closing:
                raise Unavailable("the daemon is shutting down; retry on another instance")
            if len(self._embeds) >= self.max_queue:
                raise Unavailable(f"{len(self._embeds)} embeddings are already waiting for the model; retry shortly")
            self._embeds.append(item)
            self._cv.notify()
        future.add_done_callback(lambda f: self._withdraw_embed(f) if f.cancelled() else None)
        return future

    def embeds_waiting(self) -> int:
        with self._cv:
            return len(self._embeds)

    def _withdraw_embed(self, future: concurrent.futures.Future) -> None:
        """Take a cancelled embedding out of the queue; one the owner thread took already
        is dropped there (set_running_or_notify_cancel says it was cancelled)."""
        with self._cv:
            self._embeds = deque(waiting for waiting in self._embeds if waiting[-1] is not future)

    def _take_embeds(self) -> list[tuple[tuple[int, ...], int, int, bool, concurrent.futures.Future]]:
        embeds = list(self._embeds)
        self._embeds.clear()
        return embeds

    def prepare(self, system: str, prompt: str, history: Sequence[tuple[str, str]] = ()) -> PreparedPrompt:
        text = native.render_chat(self._L, self._template, system or self.settings.system_prompt, prompt, history)
        opened = text.rstrip().endswith(self.markers[0])
        if self._native:
            open_ = () if opened else self._open
            skip = self.tokenize(("" if opened else self._open_text) + self._close_text)
        else:
            open_, skip = self._open, ()
        return PreparedPrompt(self.tokenize(text), open_, self._close, skip, self._wrap, self.settings.wrap_up)

    async def generate(self, job: GenerationJob) -> GenerationResult:
        future = self._submit(job)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            # Nobody will read the result (the pipeline shields this await and
            # cancels the job itself): stop the samples rather than run them out.
            job.cancel()
            raise

    def queue_depth(self) -> int:
        with self._cv:
            return len(self._queue.pending) + len(self._admitted) + len(self._running)

    def failure(self) -> str:
        return self._queue.failure

    def last_progress(self) -> float:
        return self._progress

    def _submit(self, job: GenerationJob) -> concurrent.futures.Future:
        return self._queue.submit(job)

    def _detect_native(self) -> bool:
        if self.settings.thinking != "auto":
            return self.settings.thinking == "native"
        # A reasoning model has its markers (<think> and </think>) as single tokens of its own.
        return len(self.tokenize(self.markers[0])) == 1 and len(self.tokenize(self.markers[1])) == 1

    def _shared_prefix(self, system: str) -> list[int]:
        """The tokens every prompt with this system prompt begins with: the template's
        opening up to where the user's text starts (the longest common prefix of two probes)."""
        a, b = (self.tokenize(native.render_chat(self._L, self._template, system, q)) for q in ("1", "A"))
        return list(a[: native.common_prefix(a, b)])

    def _cached(self, job: GenerationJob) -> int:
        """How many of the job's prompt tokens the prefix cache holds (at least one is left to decode)."""
        tokens = job.prompt.tokens
        return min(native.common_prefix(self._prefix, tokens), len(tokens) - 1) if self._prefix else 0

    # owner thread --------------------------------------------------------------

    def _supervised(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # the thread is ending: nothing may be left waiting on it
            self._stop_for(exc)

    def _loop(self) -> None:
        q = self._queue
        while True:
            with self._cv:
                self._progress = time.monotonic()
                while not q.pending and not self._running and not self._embeds and not q.closing:
                    # Wake every second even when idle, so last_progress() shows the loop turns.
                    self._cv.wait(timeout=1.0)
                    self._progress = time.monotonic()
                if q.closing and not q.pending and not self._running:
                    return
            # Assessments first: a request waiting for its risk score waits at most one step.
            linger = self._run_embeds()
            with self._cv:
                if linger and self._running:
                    self._linger()
                self._admitted = self._take_admissible()
            while self._admitted:
                self._start_next()
            self._prefill()
            if self._running:
                self._step()

    def _run_embeds(self) -> bool:
        """Run the waiting view jobs, oldest first, up to VIEW_CONTEXT tokens decoded a turn;
        True if one of them has its generation to follow (`view`'s linger)."""
        budget = native.VIEW_CONTEXT
        linger = False
        while budget > 0:
            with self._cv:
                if not self._embeds:
                    return linger
                tokens, first, end, wants, future = self._embeds.popleft()
            if not future.set_running_or_notify_cancel():
                continue  # its caller went away while it waited
            try:
                vector, decoded = self._view(tokens, first, end)
                budget -= max(1, decoded)
                linger |= wants
            except native.EngineFault as exc:
                reject(future, Unavailable(stopped_message(str(exc))))
                raise
            except Exception as exc:  # one bad embedding fails that caller only
                reject(future, exc)
            else:
                self.embedded += 1
                resolve(future, vector)
        return linger

    def _linger(self) -> None:
        """Hold the next step (the lock held) until a job is queued, a view waits, or LINGER_S passes."""
        q = self._queue
        began = time.monotonic()
        deadline = began + LINGER_S
        while not q.pending and not self._embeds and not q.closing and (left := deadline - time.monotonic()) > 0:
            self._cv.wait(timeout=left)
        self.lingered += time.monotonic() - began

    def _view(self, tokens: tuple[int, ...], first: int, end: int) -> tuple[np.ndarray, int]:
        """A view's vector, kept or decoded (engine/view.py); returns it and the tokens decoded."""
        key = (tokens, first, end)
        vector = self._kept.get(key)
        if vector is not None:  # the same prompt again (a quote, then its ask): nothing to decode
            self._kept.move_to_end(key)
            return vector, 0
        if self._viewer is None:
            self._viewer = LayerView(self._L, self._model, self._view_opening, self._threads, self.settings.n_batch)
        vector = self._viewer.decode(tokens, first, end)
        vector.flags.writeable = False  # kept, and handed to every caller of this prompt
        self.views_decoded += 1
        self._kept[key] = vector
        while len(self._kept) > VIEW_KEPT:
            self._kept.popitem(last=False)
        return vector, len(tokens) - min(native.common_prefix(self._view_opening, tokens), first)

    def _take_admissible(self) -> list[tuple[GenerationJob, concurrent.futures.Future, list[int]]]:
        out = []
        while (head := self._queue.head()) is not None:
            job, future = head
            need = cells_needed(job) - self._cached(job)
            if job.cancelled.is_set():
                self._queue.take(head, turn=False)
                resolve(future, cancelled_before_start(job))
                continue
            if job.samples > self.limits.n_seq_max or need > self.limits.n_ctx:
                self._queue.take(head, turn=False)
                reject(future, FailedPrecondition("the plan does not fit the model's context"))
                continue
            # Round-robin by tenant (jobs.JobQueue.head); a big job at the head waits rather than starve.
            if job.samples > len(self._free_seqs) or need > self._free_cells:
                break
            self._queue.take(head)
            # From here the caller can no longer cancel the future, only the job;
            # False means it cancelled the future already: nobody wants the result.
            if not future.set_running_or_notify_cancel():
                continue
            self._free_cells -= need
            out.append((job, future, [self._free_seqs.pop() for _ in range(job.samples)]))
        return out

    def _start_next(self) -> None:
        job, future, seqs = self._admitted[0]
        p = job.prompt
        cached = self._cached(job)
        prefix = p.open_thinking if job.thinking_cap else p.skip_thinking
        tokens = list(p.tokens) + list(prefix)
        run = Running(
            job, future, seqs,
            [
                SampleState(i, job.thinking_cap, job.answer_cap, p.close_thinking, job.on_text, p.wrap_up, p.wrap_up_text,
                            close_tag=self.markers[1], stop_strings=job.stop)
                for i in range(job.samples)
            ],
            [native.sampler(self._L, self.settings, job.seed + i, job.temperature, job.top_p) for i in range(job.samples)],
            [len(tokens)] * job.samples,
            cells_needed(job) - cached,
            len(prefix),
            waiting=list(range(first_samples(job), job.samples)),
            last_token=tokens[-1],
            prune_at=job.prune_below([]) if job.prune_below is not None else None,
        )
        with self._cv:
            del self._admitted[0]
            self._running.append(run)
            if self._queue.closing:  # admitted just before close(): stop it like the others
                job.cancelled.set()
        run.prompt = tokens
        if cached:
            # The job's sequences join the cached prefix's cells; its own tokens are decoded from there.
            for seq in seqs:
                self._L.llama_memory_seq_cp(self._mem, self.settings.n_seq_max, seq, 0, cached)
            run.prefilled = cached

    def _prefill(self) -> None:
        """Decode new prompts, oldest first: with model.prefill_chunk, at most that many prompt
        tokens per loop turn (short prompts admitted together still start together), so running
        samples step between chunks of a long one; with 0, every new prompt whole."""
        budget = self.settings.prefill_chunk or None
        for run in [r for r in self._running if r.prefilling]:
            if run.job.cancelled.is_set():
                continue  # the step stops its samples
            end = len(run.prompt) if budget is None else min(len(run.prompt), run.prefilled + budget)
            if budget is not None:
                budget -= end - run.prefilled
            self._prefill_run(run, end)
            if budget == 0:
                return

    def _prefill_run(self, run: Running, end: int) -> None:
        tokens, seqs, job = run.prompt, run.seqs, run.job
        try:
            self._decode_prompt(tokens, seqs, run.prefilled, end)
            run.prefilled = end
            if end < len(tokens):
                return
            last = self._batch.n_tokens - 1
            for i in run.waiting:
                self._L.llama_memory_seq_rm(self._mem, seqs[i], len(tokens) - 1, -1)
            for i in range(first_samples(job)):
                # A sample that ends at once can settle the vote and stop the rest.
                if not run.states[i].done:
                    self._accept(run, i, self._L.llama_sampler_sample(run.samplers[i], self._ctx, last), last)
        except native.EngineFault:
            raise
        except Exception as exc:  # one bad job must not stop the loop
            log.exception("starting a job failed")
            run.prefilled = len(tokens)
            run.fail(f"starting the job failed: {exc}")
        self._finish_if_done(run)

    def _decode_prompt(
        self, tokens: list[int], seqs: list[int], begin: int = 0, end: int | None = None, logits: bool = True,
    ) -> None:
        """Decode tokens[begin:end] for every sequence in seqs; logits only for the prompt's last token (if any)."""
        b, n_batch = self._batch, self.settings.n_batch
        end = len(tokens) if end is None else end
        for start in range(begin, end, n_batch):
            b.n_tokens = 0
            put_prompt(b, tokens, seqs, start, min(start + n_batch, end))
            if not logits:
                b.logits[b.n_tokens - 1] = False
            rc = self._L.llama_decode(self._ctx, b)
            if rc != 0:
                native.check_fatal(rc)
                raise RuntimeError(f"llama_decode returned {rc} on the prompt")

    def _step(self) -> None:
        b, L = self._batch, self._L
        b.n_tokens = 0
        outputs: list[tuple[Running, int, int]] = []
        for run in self._running:
            if run.job.cancelled.is_set():
                for st in run.states:
                    st.stop("cancelled")
                continue
            for i, st in enumerate(run.states):
                if st.done or not st.feed:
                    continue
                outputs.append((run, i, put_feed(b, st.feed, run.pos[i], run.seqs[i])))
                run.pos[i] += len(st.feed)
        if b.n_tokens:
            rc = L.llama_decode(self._ctx, b)
            if rc != 0:
                native.check_fatal(rc)
                log.error("llama_decode returned %d; failing %d running jobs", rc, len(self._running))
                for run in list(self._running):
                    run.fail(f"llama_decode returned {rc}")
            else:
                for run, i, idx in outputs:
                    if not run.states[i].done:
                        self._accept(run, i, L.llama_sampler_sample(run.samplers[i], self._ctx, idx), idx)
        for run in list(self._running):
            self._finish_if_done(run)

    def _accept(self, run: Running, i: int, token: int, idx: int) -> None:
        # Whatever a job's callbacks (or its bookkeeping) raise fails that job
        # only; the try costs nothing until something raises.
        st, job, what = run.states[i], run.job, "the sample bookkeeping"
        try:
            L = self._L
            # About 0.1-0.2 ms per token for SmolLM2's 49k-token vocabulary (docs/benchmarks.md).
            logprob = token_logprob(native.logits(L, self._ctx, idx, self._n_vocab), token)
            st.accept(token, native.piece(L, self._vocab, token), bool(L.llama_vocab_is_eog(self._vocab, token)), logprob)
            if st.sink_error is not None:
                what = "the text sink (on_text)"
                raise st.sink_error
            if not st.done:
                confidence = st.running_confidence
                if run.prune_at is None or confidence is None or confidence >= run.prune_at:
                    return
                # Its lowest window only falls from here: it would end below the bar. It does not vote.
                st.stop("pruned")
            else:
                what = "extract_answer"
                st.result.answer = job.extract_answer(st.result.text)
                run.answers.append(st.result.answer)
                run.confidences.append(st.result.confidence)
                if job.prune_below is not None:
                    what = "prune_below"
                    run.prune_at = job.prune_below(run.confidences)
            what = "vote_decided"
            run.after_finish()
        except Exception as exc:
            log.warning("failing one job: %s raised %r", what, exc)
            # This sample's handling did not complete, even if its text did.
            st.stop("error")
            st.result.finish_reason = "error"
            run.fail(f"{what} raised {type(exc).__name__}: {exc}")

    def _finish_if_done(self, run: Running) -> None:
        if not all(st.done for st in run.states):
            return
        L = self._L
        for seq in run.seqs:
            L.llama_memory_seq_rm(self._mem, seq, -1, -1)
        for chain in run.samplers:
            L.llama_sampler_free(chain)
        with self._cv:
            self._running.remove(run)
            self._free_seqs.extend(run.seqs)
            self._free_cells += run.cells
        resolve(run.future, result(run))

    def _stop_for(self, exc: BaseException) -> None:
        """The loop died: record why, then resolve every job it held so no caller waits forever."""
        why = f"{type(exc).__name__}: {exc}"
        log.critical("the model engine stopped: %s", why, exc_info=exc)
        with self._cv:
            waiting = self._queue.stop(why)
            admitted, self._admitted = self._admitted, []
            running, self._running = self._running, []
            embeds = self._take_embeds()
        # Waiting or admitted jobs decoded nothing: refuse them, nothing to charge.
        for _job, future, *_ in waiting + admitted:
            reject(future, Unavailable(stopped_message(why)))
        for *_view, future in embeds:
            reject(future, Unavailable(stopped_message(why)))
        # Running jobs did run: report their usage so far so it is charged.
        # llama.cpp is not touched here; its state is suspect and the process restarts.
        for run in running:
            try:
                run.fail("")
                run.error = f"the model engine stopped: {why}"
                resolve(run.future, result(run, fatal=True))
            except BaseException as inner:  # keep resolving the others
                reject(run.future, Unavailable(stopped_message(why)))
                log.error("could not report a running job's usage: %r", inner)
