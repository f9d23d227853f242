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


def tokenize(L: Any, vocab: Any, text: str, special: bool) -> tuple[int, ...]:
    data = text.encode()
    n = len(data) + 16
    buf = (L.llama_token * n)()
    got = L.llama_tokenize(vocab, data, len(data), buf, n, False, special)
    if got < 0:
        buf = (L.llama_token * -got)()
        got = L.llama_tokenize(vocab, data, len(data), buf, -got, False, special)
    return tuple(buf[:got])


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


def piece(L: Any, vocab: Any, token: int) -> bytes:
    buf = ctypes.create_string_buffer(64)
    n = L.llama_token_to_piece(vocab, token, buf, 64, 0, True)
    if n < 0:
        buf = ctypes.create_string_buffer(-n)
        n = L.llama_token_to_piece(vocab, token, buf, -n, 0, True)
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
