"""One sample's life: thinking (capped exactly), then answering, then done.

Pure bookkeeping over token ids and their text pieces, so it is tested with
tables and no model. The engine feeds it each sampled token and decodes what it
says to feed next.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import Callable

from ponderd.engine import ANSWER, THINKING, SampleResult
from ponderd.engine.confidence import WindowConfidence

CLOSE_TAG = "</think>"


@dataclass
class SampleState:
    index: int
    thinking_cap: int
    answer_cap: int
    close_tokens: tuple[int, ...]
    # Called with (sample index, phase, text) as text is produced.
    on_text: Callable[[int, str, str], None] | None = None
    # Forced after close_tokens at the cap only, so a capped sample answers at once;
    # its text opens the answer, as the model reads it.
    wrap_up: tuple[int, ...] = ()
    wrap_up_text: str = ""
    # The model's closing thinking marker (engine/markers.py), recognised in its text.
    close_tag: str = CLOSE_TAG
    # Stop strings (the request's `stop`): the sample ends as soon as its answer text
    # (never its thinking) contains one, the text cut before it, finish_reason "stop".
    stop_strings: tuple[str, ...] = ()
    phase: str = THINKING
    result: SampleResult = field(init=False)
    # Tokens to decode next for this sample (the last sampled one and/or forced ones).
    feed: list[int] = field(default_factory=list)
    # What on_text raised, if it did: the sink is dropped and the engine fails the job.
    sink_error: Exception | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.result = SampleResult(self.index)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._raw_thinking = ""
        # Answer text that may be the start of a stray </think>, held until it is not.
        self._held = ""
        # Answer text that may be the start of a stop string, held until it is not:
        # never emitted (streamed) unless the sample runs on past it.
        self._stop_held = ""
        self._hold = max((len(s) for s in self.stop_strings), default=1) - 1
        # A stop string ended the answer: nothing after it is answer text.
        self._cut = False
        # How many of the held characters are forced text (the wrap-up), where no stop string may end.
        self._protected = 0
        self._confidence = WindowConfidence()
        if self.thinking_cap == 0:
            self.phase = ANSWER

    @property
    def done(self) -> bool:
        return self.phase == "done"

    @property
    def running_confidence(self) -> float | None:
        """The lowest window confidence so far (None before a full window): pruning reads it."""
        return self._confidence.lowest_so_far

    def accept(self, token: int, piece: bytes, is_eog: bool, logprob: float | None = None) -> None:
        """Take one sampled token (and its log-probability, if known); set `feed` to what must be decoded next."""
        if self.done:
            raise RuntimeError("sample already finished")
        if logprob is not None and not is_eog:
            self._confidence.add(logprob)
        if self.phase == THINKING:
            self._think(token, piece, is_eog)
        else:
            self._answer(token, piece, is_eog)

    def stop(self, reason: str) -> None:
        """End the sample early (vote decided, cancelled, error)."""
        if not self.done:
            self._finish(reason)

    def _think(self, token: int, piece: bytes, is_eog: bool) -> None:
        if is_eog:
            # The model wants to stop mid-thought: close the block and make it answer.
            self._close(capped=False)
            return
        self.result.thinking_tokens += 1
        text = self._decoder.decode(piece)
        self._raw_thinking += text
        if self._raw_thinking.rstrip().endswith(self.close_tag):
            # The model closed its own thinking block; the tag is not thinking text.
            head = self._raw_thinking.rstrip()[: -len(self.close_tag)]
            self._emit(THINKING, head[len(self.result.thinking):])
            self.result.thinking = head
            self._to_answer()
            self.feed = [token]
            return
        self._emit(THINKING, text)
        self.result.thinking = self._raw_thinking
        if self.result.thinking_tokens >= self.thinking_cap:
            self.feed = [token]
            self._close(capped=True)
        else:
            self.feed = [token]

    def _close(self, capped: bool) -> None:
        self.result.thinking_capped = capped
        forced = list(self.close_tokens) + (list(self.wrap_up) if capped else [])
        self.result.forced_tokens += len(forced)
        # Capped: the cap-th token is not decoded yet, so it goes first.
        self.feed = self.feed + forced if capped else forced
        self.result.thinking += self._decoder.decode(b"", final=True)
        self._to_answer()
        if capped and self.wrap_up:
            # Ponder's text, not the model's: a stop string must not end the answer inside it.
            self._answer_text(self.wrap_up_text, forced=True)

    def _to_answer(self) -> None:
        self.phase = ANSWER
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def _answer(self, token: int, piece: bytes, is_eog: bool) -> None:
        if is_eog:
            self._finish("stop")
            return
        self.result.answer_tokens += 1
        self._answer_text(self._decoder.decode(piece))
        if self.done:  # a stop string ended it
            return
        if self.result.answer_tokens >= self.answer_cap:
            self._finish("length")
        else:
            self.feed = [token]

    def _answer_text(self, text: str, final: bool = False, forced: bool = False) -> bool:
        """Add answer text (to the result and the stream); True when a stop string cut it."""
        # Small models often close the thinking block again after Ponder closed
        # it for them; the tag is not answer text, in the result or the stream.
        held = (self._held + text).replace(self.close_tag, "")
        keep = 0 if final else _partial_tag(held, self.close_tag)
        out, self._held = held[: len(held) - keep], held[len(held) - keep :]
        cut = False
        if self.stop_strings:
            out, cut = self._before_stop(out, final, forced)
        self.result.text += out
        self._emit(ANSWER, out)
        if cut:
            self._cut = True
            if not final:
                self._finish("stop")
        return cut

    def _before_stop(self, text: str, final: bool, forced: bool = False) -> tuple[str, bool]:
        """The part of `text` that is answer for sure, and whether a stop string ends the answer there.

        Held back: the longest stop string's length minus one, as it could begin one. A stop
        string that ends in the new text begins in the held part or the new text (earlier text
        was released only once no stop string could start in it), so only those are searched.
        `forced` text (the wrap-up) is not searched: a stop string must end after it."""
        pending = self._stop_held + text
        at = None if forced else first_stop(pending, self.stop_strings, after=self._protected)
        if at is not None:
            self._stop_held, self._protected = "", 0
            return pending[:at], True
        keep = 0 if final else min(self._hold, len(pending))
        released = len(pending) - keep
        self._protected = len(pending) if forced else self._protected
        self._protected = max(0, self._protected - released)
        self._stop_held = pending[released:]
        return pending[:released], False

    def _finish(self, reason: str) -> None:
        tail = self._decoder.decode(b"", final=True)
        if self.phase == ANSWER and not self._cut and self._answer_text(tail, final=True) and reason == "length":
            reason = "stop"  # what was held back completed a stop string: the answer ended there
        self.result.text = self.result.text.strip()
        self.result.thinking = self.result.thinking.strip()
        self.result.finish_reason = reason
        self.result.confidence = self._confidence.value
        self.phase = "done"
        self.feed = []

    def _emit(self, phase: str, text: str) -> None:
        if text and self.on_text is not None:
            try:
                self.on_text(self.index, phase, text)
            except Exception as exc:
                # A broken sink must not break this sample's bookkeeping (nor the
                # engine loop): keep the error for the engine, send nothing more.
                self.sink_error = exc
                self.on_text = None


def first_stop(text: str, stops: tuple[str, ...], after: int = 0) -> int | None:
    """Where the earliest stop string in `text` that ends past its first `after` characters begins; None if none."""
    found = [at for at in (text.find(s, max(0, after - len(s) + 1)) for s in stops if s) if at >= 0]
    return min(found) if found else None


def _partial_tag(text: str, tag: str = CLOSE_TAG) -> int:
    """The length of the longest end of text that could begin the closing tag."""
    for n in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0
