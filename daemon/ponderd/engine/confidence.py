"""Per-sample confidence from token log-probabilities (DeepConf's lowest group confidence).

A sample's confidence is the geometric-mean probability of its least certain
stretch of WINDOW sampled tokens: exp(min over sliding windows of the mean
log-probability of the sampled token). One long confident run cannot hide a
stretch where the model was guessing, which a whole-sample mean would. A sample
shorter than a window is judged on all its tokens. Forced tokens are not the
model's choice and do not count.

`token_logprob` reads the raw logits llama.cpp produced for the step (before
top-k/top-p/temperature), so confidence does not depend on sampler settings.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

WINDOW = 16


def token_logprob(logits: np.ndarray, token: int) -> float:
    """log softmax(logits)[token], computed stably in float32 (one pass of exp over the vocabulary)."""
    top = logits.max()
    shifted = np.subtract(logits, top)
    np.exp(shifted, out=shifted)
    return float(logits[token] - top) - math.log(float(shifted.sum()))


class WindowConfidence:
    """The lowest mean log-probability over sliding windows, kept in O(1) per token."""

    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self.tokens = 0
        self._recent: deque[float] = deque()
        self._sum = 0.0
        self._lowest = math.inf

    def add(self, logprob: float) -> None:
        self.tokens += 1
        self._recent.append(logprob)
        self._sum += logprob
        if len(self._recent) > self.window:
            self._sum -= self._recent.popleft()
        if len(self._recent) == self.window:
            self._lowest = min(self._lowest, self._sum / self.window)

    @property
    def lowest_so_far(self) -> float | None:
        """exp(lowest full-window mean) so far; None before the first full window.
        It can only fall as tokens come, so a sample already below a bar ends below it."""
        return math.exp(self._lowest) if self.tokens >= self.window else None

    @property
    def value(self) -> float:
        """exp(lowest window mean) in (0, 1]; 0.0 when no token was seen (no evidence)."""
        if not self.tokens:
            return 0.0
        lowest = self._lowest if self.tokens >= self.window else self._sum / len(self._recent)
        return math.exp(lowest)
