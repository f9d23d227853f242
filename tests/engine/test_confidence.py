"""Per-sample confidence: the token log-probability and the lowest sliding-window mean. Tables, no model."""

import math

import numpy as np
import pytest

from ponderd.engine.confidence import WindowConfidence, token_logprob
from ponderd.engine.sample import SampleState


@pytest.mark.parametrize(
    "logits, token",
    [
        ([0.0, 0.0], 0),
        ([10.0, 0.0, -5.0], 0),
        ([10.0, 0.0, -5.0], 2),
        ([1000.0, 999.0], 1),  # large logits must not overflow
        (list(np.linspace(-20, 20, 49152)), 123),  # SmolLM2's vocabulary size
    ],
)
def test_token_logprob_is_the_log_softmax_of_the_sampled_token(logits, token):
    x = np.array(logits, dtype=np.float32)
    ref = np.array(logits, dtype=np.float64)
    expected = ref[token] - ref.max() - math.log(np.exp(ref - ref.max()).sum())
    assert token_logprob(x, token) == pytest.approx(expected, abs=1e-4)
    assert x.tolist() == np.array(logits, dtype=np.float32).tolist()  # the logits are read, never changed


@pytest.mark.parametrize(
    "window, logprobs, lowest_mean",
    [
        (4, [], None),
        (4, [-1.0], -1.0),  # shorter than a window: the mean of what there is
        (4, [-1.0, -3.0], -2.0),
        (2, [-0.1, -0.1, -3.0, -3.0, -0.1, -0.1], -3.0),  # a bad stretch in the middle is what counts
        (3, [-3.0, -3.0, -3.0, -0.1, -0.1, -0.1], -3.0),  # at the start too
        (3, [-0.1, -0.1, -0.1, -0.1, -0.1, -3.0], (-0.2 - 3.0) / 3),  # a single bad token at the end
        (16, [-0.5] * 40, -0.5),
    ],
)
def test_the_lowest_window_mean(window, logprobs, lowest_mean):
    c = WindowConfidence(window)
    for lp in logprobs:
        c.add(lp)
    assert c.tokens == len(logprobs)
    if lowest_mean is None:
        assert c.value == 0.0  # no evidence
    else:
        assert c.value == pytest.approx(math.exp(lowest_mean))


def test_a_sample_counts_the_tokens_it_chose_but_not_its_end_or_forced_tokens():
    st = SampleState(0, 1, 3, (901, 902))
    st.accept(1, b"t", False, math.log(0.5))  # its one thinking token; the closing tag is forced
    st.accept(2, b"a", False, math.log(0.5))
    st.accept(0, b"", True, math.log(0.001))  # the end of generation does not count
    assert st.done and st.result.confidence == pytest.approx(0.5)


def test_without_log_probabilities_confidence_stays_unknown():
    st = SampleState(0, 0, 3, ())
    st.accept(1, b"a", False)
    st.stop("vote_decided")
    assert st.result.confidence == 0.0
