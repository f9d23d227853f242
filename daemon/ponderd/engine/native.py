"""Thin wrappers over llama-cpp-python's C API: text <-> tokens, samplers, decode errors, logs.

Stateless helpers taking the llama_cpp module `L`, so the engine module keeps
only scheduling; none of them is thread-safe beyond what llama.cpp is.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any, Sequence

import numpy as np

from ponderd.settings import ModelSettings

log = logging.getLogger("ponder.engine")


class EngineFault(RuntimeError):
    """llama.cpp failed in a way no job caused (allocation or compute): the engine must stop."""


def check_fatal(rc: int) -> None:
    # llama_decode: 1 = no KV slot, 2 = aborted, -1 = invalid batch (this call's
    # fault; the engine fails the jobs involved); below -1 allocation or compute
    # failed, which no job caused and only a restart can remedy.
    if rc < -1:
        raise EngineFault(f"llama_decode returned {rc} (allocation or compute failure)")


def tokenize(L: Any, vocab: Any, text: str, special: bool, add_special: bool = False) -> tuple[int, ...]:
    """Text to tokens; `special` parses special-token markup, `add_special` adds the model's BOS (if it has one)."""
    data = text.encode()
    n = len(data) + 16
    buf = (L.llama_token * n)()
    got = L.llama_tokenize(vocab, data, len(data), buf, n, add_special, special)
    if got < 0:
        buf = (L.llama_token * -got)()
        got = L.llama_tokenize(vocab, data, len(data), buf, -got, add_special, special)
    return tuple(buf[:got])


def detokenize(L: Any, vocab: Any, tokens: Sequence[int]) -> str:
    """Tokens back to text, special tokens left out, as llama-cpp-python's Llama.detokenize does
    (a leading space after BOS dropped), so a text cut to N tokens reads the same in both."""
    out = b"".join(piece(L, vocab, t, special=False) for t in tokens)
    if tokens and tokens[0] == L.llama_vocab_bos(vocab) and out[:1] == b" ":
        out = out[1:]
    return out.decode("utf-8", "ignore")


def render_chat(L: Any, template: Any, system: str, prompt: str, history: Sequence[tuple[str, str]] = ()) -> str:
    """The conversation in the model's chat template: the system prompt, earlier turns (role, text), the user's prompt."""
    turns = [("system", system), *history, ("user", prompt)]
    msgs = (L.llama_chat_message * len(turns))()
    for m, (role, content) in zip(msgs, turns):
        m.role, m.content = role.encode(), content.encode()
    size = 2 * sum(len(m.content) + len(m.role) for m in msgs) + 512
    buf = ctypes.create_string_buffer(size)
    n = L.llama_chat_apply_template(template, msgs, len(turns), True, buf, size)
    if n < 0:
        # No template llama.cpp recognises: fall back to ChatML.
        return "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in turns) + "<|im_start|>assistant\n"
    if n > size:
        buf = ctypes.create_string_buffer(n)
        n = L.llama_chat_apply_template(template, msgs, len(turns), True, buf, n)
    return buf.raw[:n].decode("utf-8", errors="replace")


def piece(L: Any, vocab: Any, token: int, special: bool = True) -> bytes:
    buf = ctypes.create_string_buffer(64)
    n = L.llama_token_to_piece(vocab, token, buf, 64, 0, special)
    if n < 0:
        buf = ctypes.create_string_buffer(-n)
        n = L.llama_token_to_piece(vocab, token, buf, -n, 0, special)
    return buf.raw[:n]


def logits(L: Any, ctx: Any, idx: int, n_vocab: int) -> np.ndarray:
    """The raw logits of batch output `idx`, as a view (valid until the next decode)."""
    return np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, idx), shape=(n_vocab,))


def sampler(L: Any, s: ModelSettings, seed: int, temperature: float | None = None, top_p: float | None = None) -> Any:
    """One sample's chain: the model's settings unless the job names its own; temperature 0 is greedy."""
    temp = s.temperature if temperature is None else temperature
    p = s.top_p if top_p is None else top_p
    chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
    if temp <= 0:
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
        return chain
    L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(s.top_k))
    L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(p, 1))
    L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(temp))
    L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    return chain


# The most tokens one view decodes beyond the prefix cache (risk/embed.py cuts a query to fewer).
VIEW_CONTEXT = 384


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """The length of the longest common prefix of two token lists."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def decode_tokens(L: Any, ctx: Any, batch: Any, tokens: Sequence[int], seq: int, start: int, stop: int,
                  out_from: int, out_to: int) -> None:
    """One llama_decode of tokens[start:stop] into `seq`, outputting those in [out_from, out_to)."""
    batch.n_tokens = stop - start
    for j, k in enumerate(range(start, stop)):
        batch.token[j], batch.pos[j], batch.n_seq_id[j] = tokens[k], k, 1
        batch.seq_id[j][0] = seq
        batch.logits[j] = out_from <= k < out_to
    rc = L.llama_decode(ctx, batch)
    if rc != 0:
        check_fatal(rc)
        raise RuntimeError(f"llama_decode returned {rc} on a view")


def prefill(L: Any, ctx: Any, batch: Any, n_batch: int, tokens: Sequence[int], seq: int, begin: int, end: int) -> None:
    """Decode tokens[begin:end] into sequence `seq` in batches of n_batch, outputting nothing."""
    for start in range(begin, end, n_batch):
        decode_tokens(L, ctx, batch, tokens, seq, start, min(start + n_batch, end), 0, 0)


def _llama_log(level: int, text: bytes, user_data: Any) -> None:
    if log.isEnabledFor(logging.DEBUG):
        log.debug("llama.cpp: %s", text.decode(errors="replace").rstrip())


# llama.cpp keeps one log callback for the whole process and may call it from
# any context until exit, so the ctypes wrapper must outlive every engine: it
# is the one piece of module state here, set once.
_LOG_CALLBACK: list[Any] = []


def route_llama_logs(L: Any) -> None:
    if not _LOG_CALLBACK:
        _LOG_CALLBACK.append(L.llama_log_callback(_llama_log))
        L.llama_log_set(_LOG_CALLBACK[0], None)
